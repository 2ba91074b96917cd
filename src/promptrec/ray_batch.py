"""Batch work on a Ray cluster: catalogue encoding (``promptrec embed --ray-address``) and
every user's list (``promptrec recommend --all-users --ray-address``).

**Encoding.** The texts the on-disk cache lacks are sent through a Ray Data pipeline
(``map_batches`` on actors that each load the encoder once), and each finished batch is written
to this machine's cache as it comes back: an interrupted run keeps what it finished, and the
next one sends only the rest. Everything that reads the catalogue afterwards (``recommend``,
``serve``, ``train``) finds its vectors in the cache.

**Batch recommendation.** The fitted :class:`~promptrec.recommender.Recommender` (its
vectors, index and scorer) is put in Ray's object store once; actors each take it and rank one
batch of users at a time (``map_batches``), and the lists stream back to this machine in
batches. A copy of a language-model encoder travels as where it was loaded from (a name or a
folder: the same folder must exist on every node), not as its weights.

Needs ``pip install "promptrec[ray]"`` here and on every node of the cluster (with the same
encoder available there). ``--ray-address local`` starts a Ray on this machine, as the tests
do; ``auto`` or ``ray://HOST:10001`` joins a running cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from promptrec.encoders import CachedEncoder, load_encoder
from promptrec.errors import ConfigError

RESULT_BATCH = 4096  # vectors written to the cache at a time (what an interruption can lose)


class EncodeBatch:
    """A Ray actor's work: the encoder loaded once, then one batch of texts at a time."""

    def __init__(self, spec: str) -> None:
        self.encoder = load_encoder(spec, cache=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(t) for t in batch["text"]], kind="document")
        return {"key": batch["key"], "vector": np.asarray(vectors, dtype=np.float32)}


def connect(address: str) -> Any:
    """Ray, initialised: ``local`` starts one on this machine, anything else joins it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError('--ray-address needs Ray: pip install "promptrec[ray]"') from exc
    if not ray.is_initialized():
        options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address == "local":
            options["num_cpus"] = os.cpu_count()
        else:
            options["address"] = address
        try:
            ray.init(**options)
        except ConnectionError as exc:
            raise ConfigError(f"--ray-address {address}: {exc}") from exc
    return ray


def encode_on_ray(
    spec: str,
    texts: Sequence[str],
    *,
    address: str,
    batch_size: int = 256,
    concurrency: int | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Encode the item texts the cache of encoder ``spec`` lacks on Ray and write them to the
    cache. Returns ``(encoded, already cached)`` counts of distinct texts.

    Args:
        spec: the encoder (as :func:`load_encoder` takes it): it must be a cached one.
        texts: the catalogue's item texts.
        address: ``local``, ``auto`` or a Ray address.
        batch_size: texts per ``map_batches`` call.
        concurrency: encoder actors (default: one per CPU of the cluster).
    """
    cache = load_encoder(spec)
    if not isinstance(cache, CachedEncoder):
        raise ConfigError(f"encoder '{spec}' is not cached on disk: there is nothing to fill")
    todo = cache.missing(texts)
    done = len(set(texts)) - len(todo)
    if not todo:
        return 0, done
    ray = connect(address)
    actors = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
    items = ray.data.from_items([{"key": k, "text": t} for k, t in todo])
    vectors = items.map_batches(
        EncodeBatch,
        fn_constructor_kwargs={"spec": spec},
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=1,
    )
    with tqdm(total=len(todo), disable=not progress, desc="encoding on Ray", unit="item") as bar:
        for batch in vectors.iter_batches(batch_size=RESULT_BATCH, batch_format="numpy"):
            cache.store([str(k) for k in batch["key"]], batch["vector"])
            bar.update(len(batch["key"]))
    return len(todo), done


class RankBatch:
    """A Ray actor's work: the fitted recommender taken from the object store once, then one
    batch of users' lists at a time (the user's seen items excluded)."""

    def __init__(self, recommender: Any, k: int) -> None:
        import ray

        from promptrec.threads import one_thread_per_request

        # an object reference when Ray hands it over as one
        self.recommender = (
            ray.get(recommender) if isinstance(recommender, ray.ObjectRef) else recommender
        )
        self.k = k
        one_thread_per_request()  # actors run side by side: one BLAS thread each

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rec = self.recommender
        histories = [
            rec.history(str(u)).with_query(str(q) or None)
            for u, q in zip(batch["user_id"], batch["query"], strict=True)
        ]
        lists = rec.recommend(histories, self.k)
        return {
            "user_id": batch["user_id"],
            "items": _objects([r.item_ids for r in lists]),
            "scores": _objects([r.scores for r in lists]),
        }


def recommend_on_ray(
    recommender: Any,
    k: int,
    *,
    address: str,
    queries: Mapping[str, str] | None = None,
    batch_size: int = 1024,
    concurrency: int | None = None,
    progress: bool = True,
) -> Iterator[tuple[str, list[str], list[float]]]:
    """Every user's ``k`` best items (seen ones excluded), ranked on Ray: ``(user_id, item
    ids, scores)`` per user, in batches as they finish (not in the log's order).

    Args:
        recommender: a fitted :class:`~promptrec.recommender.Recommender`.
        address: ``local``, ``auto`` or a Ray address.
        queries: a live query per user (the others get plain lists).
        batch_size: users per ``map_batches`` call.
        concurrency: ranking actors (default: one per CPU of the cluster).
    """
    users = recommender.user_ids
    if not users:
        return
    ray = connect(address)
    actors = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
    shared = ray.put(recommender)
    queries = queries or {}
    rows = [{"user_id": u, "query": queries.get(u, "")} for u in users]
    lists = ray.data.from_items(rows).map_batches(
        RankBatch,
        fn_constructor_kwargs={"recommender": shared, "k": k},
        batch_size=batch_size,
        concurrency=min(actors, max(1, -(-len(users) // batch_size))),
        num_cpus=1,
    )
    with tqdm(total=len(users), disable=not progress, desc="users on Ray", unit="user") as bar:
        for batch in lists.iter_batches(batch_size=batch_size, batch_format="numpy"):
            for user, items, scores in zip(
                batch["user_id"], batch["items"], batch["scores"], strict=True
            ):
                yield str(user), list(items), [float(s) for s in scores]
            bar.update(len(batch["user_id"]))


def _objects(rows: list[list[Any]]) -> np.ndarray:
    """A 1-d object array of lists (numpy would make equal-length lists a 2-d array)."""
    return np.fromiter(rows, dtype=object, count=len(rows))
