"""Catalogue encoding on Ray (a local cluster started by the test): the vectors are the local
encoder's, each finished batch is cached as it comes back, and an interrupted run resumes
without encoding again what it finished."""

from __future__ import annotations

import json

import pytest

from promptrec import ray_batch
from promptrec.encoders import CachedEncoder, load_encoder
from promptrec.prompts.items import ItemPrompter


@pytest.fixture(scope="module")
def local_ray():
    ray = ray_batch.connect("local")
    yield ray
    ray.shutdown()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTREC_CACHE_DIR", str(tmp_path / "cache"))


def test_encoding_on_ray_resumes_after_an_interruption(
    local_ray, fresh_cache, beauty_slice, monkeypatch
) -> None:
    texts = ItemPrompter().texts(beauty_slice.items.iloc[:160])
    distinct = len(set(texts))
    monkeypatch.setattr(ray_batch, "RESULT_BATCH", 32)
    store, stored = CachedEncoder.store, []

    def stop_after_two_batches(self, keys, vectors):
        if len(stored) == 2:
            raise KeyboardInterrupt  # the run is stopped part way
        stored.append(len(keys))
        return store(self, keys, vectors)

    monkeypatch.setattr(CachedEncoder, "store", stop_after_two_batches)
    one = {"address": "local", "batch_size": 16, "concurrency": 1, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        ray_batch.encode_on_ray("default", texts, **one)
    monkeypatch.setattr(CachedEncoder, "store", store)
    assert stored == [32, 32]
    encoded, cached = ray_batch.encode_on_ray("default", texts, **one)
    assert (encoded, cached) == (distinct - 64, 64)  # what was finished is not sent again
    assert ray_batch.encode_on_ray("default", texts, address="local", progress=False) == (
        0,
        distinct,
    )
    cache = load_encoder("default")
    from_cache = cache.encode(texts)
    assert cache.misses == 0
    local = load_encoder("default", cache=False).encode(texts)
    # the same model: equal up to the numerics of other batches (padding, reduced precision)
    cosine = (from_cache * local).sum(axis=1)
    assert cosine.min() > 0.999


def test_embed_on_ray_from_the_command_line(local_ray, fresh_cache, cli, tmp_path) -> None:
    import json

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(
        "\n".join(
            json.dumps({"item_id": str(n), "title": f"Argan shampoo {n}", "brand": "Rosa"})
            for n in range(40)
        )
    )
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\nu1,1,1\nu1,2,2\n")
    args = ["embed", "--catalog", str(catalog), "--events", str(events), "--ray-address", "local"]
    code, out, err = cli(args)
    assert code == 0, err
    assert "40 encoded (40 on Ray), 0 from cache" in out
    code, out, _ = cli(args)
    assert "0 encoded (0 on Ray), 40 from cache" in out


def test_every_users_list_on_ray_is_the_local_one(local_ray, beauty_slice, tmp_path, cli) -> None:
    """``recommend --all-users --ray-address``: the fitted recommender is shipped to Ray actors
    once (its language model as where it was loaded from) and they rank the users; the export
    equals the one made here, user for user."""
    catalog, events = tmp_path / "catalog.jsonl", tmp_path / "events.csv"
    beauty_slice.items.drop(columns=["asin"]).to_json(catalog, orient="records", lines=True)
    beauty_slice.events[["user_id", "item_id", "timestamp"]].to_csv(events, index=False)
    exports = {}
    for where, extra in (("here", []), ("ray", ["--ray-address", "local"])):
        out = tmp_path / f"{where}.jsonl"
        code, said, err = cli(
            [
                "recommend",
                "--catalog",
                str(catalog),
                "--events",
                str(events),
                "--strategy",
                "recent",
                "--all-users",
                "-k",
                "5",
                "--output",
                str(out),
                *extra,
            ]
        )
        assert code == 0, err
        assert ("on Ray" in said) == (where == "ray")
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        exports[where] = {line["user_id"]: line for line in lines}
    assert len(exports["ray"]) == len(exports["here"]) == beauty_slice.events["user_id"].nunique()
    for user, line in exports["here"].items():
        got = exports["ray"][user]
        assert got["items"] == line["items"], user
        assert got["scores"] == pytest.approx(line["scores"], abs=1e-5)
