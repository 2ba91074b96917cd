"""The service at shop scale: synthetic catalogues of 100k or 1M products and logs of millions
of events, served by `promptrec serve` with the model-free `hashing` encoder (the index and the
service are what is measured, not a language model).

For each size (``--sizes``): writes the shop as files, then measures

* ``promptrec ingest``: wall time and peak memory;
* ``promptrec serve --workers N``: time until every worker answers, first start (vectors
  encoded, index built), second start (texts, vectors and graph read from the cache), and a
  start after the catalogue changes below (only the changed rows computed and added to the
  saved graph), and each worker's memory;
* ``GET /recommend``: p50/p99 for known users, with a live query, and with a category filter
  (one connection, closed loop);
* ``POST /events``: single-event requests on 4 and on 64 connections (closed loop):
  acknowledged events/s, p50/p99;
* ``PUT /items``: latency of five new items and five changes, and the time until every
  worker serves each (asked of each worker on its own connection); one ``DELETE``;
* ANN quality: recall@10 of the served index against exact search, with the user's history
  excluded and with a category filter, in process;
* fast-mode training: the seconds of one epoch, in process.

Give it the machine alone. Writes ``results/scale.{json,md}``::

    python benchmarks/scale.py --sizes 100000
    python benchmarks/scale.py --sizes 100000,1000000 --events 1000000,5000000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from events_load import post_loop
from promptrec.service.process import LiveServer, clients_per_worker

ADJECTIVES = (
    "red blue green black white pink gold silver matte glossy organic vegan gentle strong "
    "classic deluxe mini travel professional natural sheer waterproof long-lasting fresh "
    "light rich soft smooth velvet crystal ultra daily intensive"
).split()
PRODUCTS = {
    "makeup": "lipstick mascara eyeliner foundation concealer blush bronzer palette primer".split(),
    "skin care": "cream serum cleanser toner mask moisturizer sunscreen exfoliator balm".split(),
    "hair care": "shampoo conditioner oil spray gel mousse serum mask dryer".split(),
    "nails": "polish lacquer remover file clipper topcoat basecoat gel kit".split(),
    "fragrance": "perfume cologne mist oil candle diffuser spray set".split(),
    "tools": "brush sponge mirror tweezers curler sharpener case bag".split(),
    "bath": "soap scrub bomb salt wash lotion oil sponge".split(),
    "men": "razor aftershave beard trimmer balm wash deodorant".split(),
}
SYLLABLES = "la ro mi ka ze no vi ta lu be sa do ri mo fa ne ko pa".split()


def make_shop(n_items: int, n_events: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A product catalogue and a behaviour log with the shape of a real shop: a category tree,
    brands with product lines, Zipf popularity, users who keep to a few categories."""
    rng = np.random.default_rng(seed)
    tops = list(PRODUCTS)
    leaves = [
        (top, f"{adj} {noun}") for top in tops for noun in PRODUCTS[top] for adj in ("", "pro")
    ]
    brands = sorted({"".join(rng.choice(SYLLABLES, 3)).title() for _ in range(4000)})
    leaf = rng.integers(0, len(leaves), n_items)
    brand = rng.integers(0, len(brands), n_items)
    adjectives = rng.choice(ADJECTIVES, size=(n_items, 2))
    sizes = rng.choice(["10 ml", "30 ml", "50 ml", "100 ml", "250 ml", "pack of 2", "set"], n_items)
    titles, categories = [], []
    for i in range(n_items):
        top, name = leaves[leaf[i]]
        noun = name.split()[-1]
        titles.append(f"{brands[brand[i]]} {adjectives[i, 0]} {adjectives[i, 1]} {noun} {sizes[i]}")
        categories.append(["Beauty", top.title(), noun.title()])
    items = pd.DataFrame(
        {
            "item_id": [f"p{i}" for i in range(n_items)],
            "title": titles,
            "brand": [brands[b] for b in brand],
            "categories": categories,
            "price": np.round(rng.lognormal(2.5, 0.8, n_items), 2),
        }
    )
    # popularity: Zipf over a random order of the items
    order = rng.permutation(n_items)
    weight = np.empty(n_items)
    weight[order] = 1.0 / np.arange(1, n_items + 1) ** 0.9
    everything = np.cumsum(weight) / weight.sum()
    by_leaf = [np.flatnonzero(leaf == j) for j in range(len(leaves))]
    leaf_cdf = [np.cumsum(weight[m]) / max(weight[m].sum(), 1e-300) for m in by_leaf]
    leaf_weight = np.array([weight[m].sum() for m in by_leaf])
    n_users = max(1000, n_events // 20)
    lengths = np.maximum(1, rng.geometric(1 / 20, n_users))
    lengths = np.round(lengths * n_events / lengths.sum()).astype(int)
    users, picks, stamps = [], [], []
    start = 1.6e9
    for u, length in enumerate(lengths):
        if length == 0:
            continue
        # 80% from three favourite leaves (a leaf in proportion to its items' popularity, then
        # an item of it in proportion to its own), 20% from the whole catalogue
        favourites = rng.integers(0, len(leaves), 3)
        share = leaf_weight[favourites] / leaf_weight[favourites].sum()
        which = favourites[np.searchsorted(np.cumsum(share), rng.random(length) * 0.999999)]
        chosen = np.searchsorted(everything, rng.random(length) * 0.999999)
        own = rng.random(length) < 0.8
        for f in np.unique(which[own]):
            rows = np.flatnonzero(own & (which == f))
            cdf = leaf_cdf[f]
            chosen[rows] = by_leaf[f][np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1])]
        users.extend([f"u{u}"] * length)
        picks.append(np.minimum(chosen, n_items - 1))
        stamps.append(start + np.sort(rng.uniform(0, 3e7, length)))
    events = pd.DataFrame(
        {
            "user_id": users,
            "item_id": [f"p{i}" for i in np.concatenate(picks)],
            "timestamp": np.concatenate(stamps).round(),
        }
    )
    return items, events


def write_shop(items: pd.DataFrame, events: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    catalog, log = folder / "catalog.jsonl", folder / "events.csv"
    items.to_json(catalog, orient="records", lines=True, force_ascii=False)
    events.to_csv(log, index=False)
    return catalog, log


def run(cmd: list[str]) -> tuple[float, float]:
    """Run a promptrec command; its wall seconds and peak memory (GB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "promptrec.cli.main", *cmd], check=True)
    seconds = time.perf_counter() - started
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return seconds, peak / 1e6


def memory_gb(pid: int, what: str, file: str = "status") -> float:
    """A process's ``what`` line (``VmRSS`` in ``status``, ``Pss`` in ``smaps_rollup``), GB."""
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(what + ":"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
    }


def timed_gets(client: httpx.Client, paths: list[str], seconds: float) -> dict:
    latencies, end, n = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        r = client.get(paths[n % len(paths)])
        assert r.status_code == 200, r.text
        latencies.append((time.perf_counter() - t) * 1000)
        n += 1
    return percentiles(latencies)


def post_events(url: str, key: str, items: list[str], seconds: float, conns: int) -> dict:
    """Single-event ``POST /events`` on ``conns`` connections, closed loop, with the light
    client of ``events_load.py``: acknowledged events/s and latency."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    r = asyncio.run(post_loop(host, int(port), key, items, seconds, conns))
    assert r["errors"] == 0, r
    return {"acked_per_s": r["rate"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}


EVENT_CONNECTIONS = (4, 64)


def ann_quality(catalog: Path, log: Path, n_users: int = 500) -> dict:
    """recall@10 of the index the service builds against exact search, in process."""
    from promptrec.data.loaders import load_dataset
    from promptrec.recommender import Recommender
    from promptrec.retrieval.filters import Filters
    from promptrec.retrieval.index import HNSWIndex, IndexConfig

    data = load_dataset(catalog=catalog, events=log)
    served = Recommender("mean-of-items", encoder="hashing").fit(data)
    exact = Recommender("mean-of-items", encoder="hashing", index=IndexConfig(kind="exact")).fit(
        data
    )
    users = list(data.user_ids[:n_users])
    index = served.index
    out: dict = {"index": "every item scored" if index is None else type(index).__name__}
    if isinstance(index, HNSWIndex):
        out["calibrated"] = index.calibration
    for name, filters in (
        ("history excluded", None),
        ("and a category filter", Filters(categories=["Makeup"])),
    ):
        out[name] = _recall(served.recommend(users, 10, filters=filters), exact, users, filters)
    if isinstance(index, HNSWIndex):  # the beam width's trade-off, history excluded
        default = index.config
        out["by ef_search"] = {}
        for ef in (256, 512, 1024, 2048, 4096):
            index.config = default.model_copy(update={"ef_search": ef})
            started = time.perf_counter()
            got = served.recommend(users, 10)
            ms = (time.perf_counter() - started) / len(users) * 1000
            out["by ef_search"][ef] = {
                "recall": _recall(got, exact, users, None),
                "ms per user": round(ms, 2),
            }
        index.config = default
    return out


def _recall(got: list, exact, users: list, filters) -> float:
    want = exact.recommend(users, 10, filters=filters)
    overlap = [
        len(set(a.item_ids) & set(b.item_ids)) / max(len(b.item_ids), 1)
        for a, b in zip(got, want, strict=True)
    ]
    return round(float(np.mean(overlap)), 4)


def training_epoch(catalog: Path, log: Path, max_len: int = 50) -> dict:
    """Fast-mode training on the shop, in process: the seconds of one epoch (every training
    position once) and of the validation that follows it; above ``sample_above`` items each
    step encodes its batch's items alone and steps the id embeddings of its batch alone (see
    ``TrainConfig.sample_above``). The scoring settings are given, not chosen."""
    from promptrec.data.loaders import load_dataset
    from promptrec.scorers.text import TextSpace
    from promptrec.train import TrainConfig, Trainer

    data = load_dataset(catalog=catalog, events=log)
    config = TrainConfig(  # the scoring settings given: one epoch is timed, not their choice
        encoder="hashing",
        epochs=1,
        refit=False,
        max_minutes=None,
        max_len=max_len,
        cooccurrence_weight=0.0,
        borrowed_ids=0,
        new_item_scale=1.0,
        new_item_text_weight=0.0,
    )
    trainer = Trainer(config, space=TextSpace("hashing"), progress=False, device="cpu")
    started = time.perf_counter()
    trainer.fit(data)
    [epoch] = trainer.state.history
    return {
        "sampled": trainer.sampled,
        "epoch_seconds": epoch.seconds,
        "fit_seconds": round(time.perf_counter() - started, 1),
        "validation_users": config.validation_users,
    }


def catalogue_changes(url: str, key: str, workers: int, n: int = 10) -> dict:
    """PUT new items, change and delete items; each change's latency, and the time until every
    worker serves it (asked of each worker on its own connection)."""
    clients = clients_per_worker(url, workers, timeout=120, request_timeout=3600)
    put_ms, everywhere_ms = [], []
    with httpx.Client(base_url=url, timeout=3600, headers={"X-API-Key": key}) as writer:
        for step in range(n):
            item = f"new-{step % 5}"  # five new items, then the same five changed
            body = {"title": f"Rosa gentle argan shampoo {step}", "price": 9.5 + step}
            t = time.perf_counter()
            r = writer.put(f"/items/{item}", json=body)
            put_ms.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
            waiting = dict(clients)
            while waiting:
                for pid, client in list(waiting.items()):
                    got = client.get(f"/items/{item}")
                    if got.status_code == 200 and got.json()["title"] == body["title"]:
                        del waiting[pid]
                time.sleep(0.005)
            everywhere_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        assert writer.delete("/items/new-0").status_code == 204
        delete_ms = (time.perf_counter() - t) * 1000
    for client in clients.values():
        client.close()
    return {
        "workers_seen": len(clients),
        "put": percentiles(put_ms),
        "served_everywhere": percentiles(everywhere_ms),
        "served_everywhere_max_ms": round(max(everywhere_ms), 1),
        "delete_ms": round(delete_ms, 1),
    }


NEW_LINES = "Velouria Quenbry Morvane Tilsora Ashcombe".split()


def found_by_title(url: str, key: str, known_users: list[str], brands: list[str]) -> dict:
    """PUT five new products (a new product line of an existing brand), then ask for each by
    its own title as the live query, for five known users and a cold one: how many lists hold
    it in the top 10, and its ranks."""
    found: dict[str, list[int | None]] = {"known": [], "cold": []}
    with httpx.Client(base_url=url, timeout=3600, headers={"X-API-Key": key}) as client:
        for i, (line, brand) in enumerate(zip(NEW_LINES, brands, strict=False)):
            title = f"{brand} {line} gentle argan shampoo 250 ml"
            item = f"line-{i}"
            body = {"title": title, "brand": brand, "categories": ["Beauty", "Hair Care"]}
            assert client.put(f"/items/{item}", json=body).status_code == 200
            time.sleep(0.5)  # every worker has it (see served_everywhere)
            users = [("known", u) for u in known_users[5 * i : 5 * i + 5]]
            for kind, user in [*users, ("cold", f"scale-cold-{i}")]:
                got = client.get("/recommend", params={"user_id": user, "k": 10, "q": title})
                ids = [r["item_id"] for r in got.json()["items"]]
                found[kind].append(ids.index(item) + 1 if item in ids else None)
    return {
        kind: {"in top 10": sum(r is not None for r in ranks), "of": len(ranks), "ranks": ranks}
        for kind, ranks in found.items()
    }


def worker_memory(url: str, workers: int) -> dict[str, list[float]]:
    """Each worker's resident memory (RSS) and its proportional share (PSS: pages shared with
    the other workers, such as the store's memory-mapped copies, counted once in all)."""
    clients = clients_per_worker(url, workers, timeout=120, request_timeout=3600)
    pids = sorted(clients)
    for client in clients.values():
        client.close()
    return {
        "rss": [round(memory_gb(pid, "VmRSS"), 2) for pid in pids],
        "pss": [round(memory_gb(pid, "Pss", "smaps_rollup"), 2) for pid in pids],
    }


def start_server(args: list[str], work: Path, workers: int, report: dict, name: str) -> LiveServer:
    """Start ``promptrec serve``, and record in ``report[name]`` the seconds until every
    worker answers and each worker's memory."""
    server = LiveServer(args, work / "server.log")
    t = time.perf_counter()
    server.start(timeout=3600)
    # every worker is up (the port answers as soon as the first one is)
    up = clients_per_worker(server.url, workers, timeout=120)
    for client in up.values():
        client.close()
    assert len(up) == workers
    report[name] = {
        "seconds": round(time.perf_counter() - t, 1),
        **{f"{k}_gb_per_worker": v for k, v in worker_memory(server.url, workers).items()},
    }
    return server


def measure(
    n_items: int,
    events_per_item: float,
    work: Path,
    seconds: float,
    workers: int,
    earlier_training: dict | None = None,
) -> dict:
    items, events = make_shop(n_items, int(n_items * events_per_item))
    catalog, log = write_shop(items, events, work / f"shop-{n_items}")
    db = work / f"shop-{n_items}.db"
    report: dict = {
        "items": n_items,
        "events": len(events),
        "users": int(events["user_id"].nunique()),
        "workers": workers,
    }
    seconds_ingest, peak = run(
        ["ingest", "--catalog", str(catalog), "--events", str(log), "--db", str(db)]
    )
    report["ingest"] = {"seconds": round(seconds_ingest, 1), "peak_gb": round(peak, 2)}
    args = ["--db", str(db), "--encoder", "hashing", "--workers", str(workers)]
    server = start_server(args, work, workers, report, "first start")
    server.stop()
    server = start_server(args, work, workers, report, "second start")
    try:
        key = server.key
        known_users = events["user_id"].drop_duplicates().sample(500, random_state=0).tolist()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            known = [f"/recommend?user_id={u}&k=10" for u in known_users]
            timed_gets(client, known, 3)  # warm-up
            report["recommend known user"] = timed_gets(client, known, seconds)
            queries = [
                f"/recommend?user_id={u}&k=10&q=gentle+shampoo+{i}"
                for i, u in enumerate(known_users)
            ]
            report["recommend with a query"] = timed_gets(client, queries, seconds)
            filtered = [f"/recommend?user_id={u}&k=10&category=Makeup" for u in known_users]
            report["recommend with a category filter"] = timed_gets(client, filtered, seconds)
        posted = items["item_id"].sample(1000, random_state=1).tolist()
        for conns in EVENT_CONNECTIONS:
            report[f"POST /events, one event each, {conns} connections"] = post_events(
                server.url, key, posted, seconds, conns
            )
        report["catalogue changes"] = catalogue_changes(server.url, key, workers)
        brands = items["brand"].drop_duplicates().sample(5, random_state=2).tolist()
        report["new item found by its title"] = found_by_title(server.url, key, known_users, brands)
        memory = worker_memory(server.url, workers)
        report["rss_gb_per_worker_after"] = memory["rss"]
        report["pss_gb_per_worker_after"] = memory["pss"]
    finally:
        server.stop()
    # a restart after those changes: the saved texts, vectors and graph serve every row that
    # did not change
    start_server(args, work, workers, report, "start after changes").stop()
    report["ann recall@10"] = ann_quality(catalog, log)
    if earlier_training is not None:  # --reuse-training: what an earlier run measured
        report["training"] = {**earlier_training, "from an earlier run": True}
    else:
        report["training"] = training_epoch(catalog, log)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="catalogue sizes, comma-separated")
    parser.add_argument(
        "--events", default=None, help="events per size, comma-separated (default 10 per item)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="per latency phase")
    parser.add_argument("--output", type=Path, default=Path("results/scale"))
    parser.add_argument("--work", type=Path, default=None, help="a folder for the shops")
    parser.add_argument("--workers", type=int, default=2, help="promptrec serve --workers")
    parser.add_argument(
        "--update", action="store_true", help="replace these sizes in the results, keep others"
    )
    parser.add_argument(
        "--reuse-training",
        action="store_true",
        help="keep the training figures of the earlier results (marked so) instead of training",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="promptrec-scale-"))
    os.environ.setdefault("PROMPTREC_CACHE_DIR", str(work / "cache"))
    sizes = [int(s) for s in args.sizes.split(",")]
    events = [int(e) for e in args.events.split(",")] if args.events else [10 * n for n in sizes]
    if len(events) != len(sizes):
        parser.error("give --events for every size")
    report: dict = {
        "cpu": os.cpu_count(),
        "encoder": "hashing (model-free stand-in)",
        "server": f"promptrec serve --workers {args.workers}",
        "sizes": {},
    }
    previous = args.output.with_suffix(".json")
    if args.update and previous.exists():  # keep the other sizes of an earlier run
        report["sizes"] = json.loads(previous.read_text())["sizes"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(previous.read_text())["sizes"] if previous.exists() else {}
    for n, e in zip(sizes, events, strict=True):
        training = earlier.get(str(n), {}).get("training") if args.reuse_training else None
        if args.reuse_training and training is None:
            parser.error(f"--reuse-training: {previous} has no training figures for {n} items")
        report["sizes"][str(n)] = measure(n, e / n, work, args.seconds, args.workers, training)
        args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"promptrec at shop scale ({os.cpu_count()} cores, `promptrec serve --workers "
        f"{args.workers}`, the model-free `hashing` encoder)",
        "",
        "| measure | "
        + " | ".join(f"{int(n):,} items" for n in sorted(report["sizes"], key=int))
        + " |",
        "|---|" + "---:|" * len(report["sizes"]),
    ]

    def pair(r: dict, phase: str) -> str:
        return f"{r[phase]['p50_ms']} / {r[phase]['p99_ms']}"

    def memory(r: dict, rss: str, pss: str) -> str:  # PSS: measured since 2026-12-08
        return f"{r[rss]} / {r[pss]}" if pss in r else f"{r[rss]}"

    def started(r: dict, which: str) -> str:
        held = memory(r[which], "rss_gb_per_worker", "pss_gb_per_worker")
        return f"{r[which]['seconds']} ({held})"

    def posted(r: dict, conns: int) -> str:
        phase = f"POST /events, one event each, {conns} connections"
        return f"{r[phase]['acked_per_s']} ({pair(r, phase)})" if phase in r else "-"

    rows = {
        "events": lambda r: f"{r['events']:,}",
        "ingest s (peak GB)": lambda r: f"{r['ingest']['seconds']} ({r['ingest']['peak_gb']})",
        "first start s (RSS / PSS GB per worker)": lambda r: started(r, "first start"),
        "second start s (RSS / PSS GB per worker)": lambda r: started(r, "second start"),
        "start after the catalogue changes s (RSS / PSS GB per worker)": lambda r: (
            started(r, "start after changes") if "start after changes" in r else "-"
        ),
        "/recommend known user p50 / p99 ms": lambda r: pair(r, "recommend known user"),
        "/recommend with a query p50 / p99 ms": lambda r: pair(r, "recommend with a query"),
        "/recommend with a category filter p50 / p99 ms": lambda r: pair(
            r, "recommend with a category filter"
        ),
        **{
            f"POST /events, {c} connections: acked/s (p50 / p99 ms)": (lambda r, c=c: posted(r, c))
            for c in EVENT_CONNECTIONS
        },
        "PUT /items p50 / p99 ms (10 changes)": lambda r: pair(r["catalogue changes"], "put"),
        "served by every worker after p50 / max ms": lambda r: (
            f"{r['catalogue changes']['served_everywhere']['p50_ms']} / "
            f"{r['catalogue changes']['served_everywhere_max_ms']}"
        ),
        "DELETE /items ms": lambda r: f"{r['catalogue changes']['delete_ms']}",
        "an item just PUT, asked for by its title: in the top 10 (known users / cold)": lambda r: (
            "{0[in top 10]} of {0[of]} / {1[in top 10]} of {1[of]}".format(
                r["new item found by its title"]["known"], r["new item found by its title"]["cold"]
            )
            if "new item found by its title" in r
            else "-"
        ),
        "RSS / PSS per worker after the phases GB": lambda r: memory(
            r, "rss_gb_per_worker_after", "pss_gb_per_worker_after"
        ),
        "index; recall@10 vs exact (history excluded / + filter)": lambda r: "{}; {} / {}".format(
            *(r["ann recall@10"][k] for k in ("index", "history excluded", "and a category filter"))
        ),
        "calibrated ef_search (recall@10 of its 200 users)": lambda r: (
            "{ef_search} ({recall@10})".format(**r["ann recall@10"]["calibrated"])
            if r["ann recall@10"].get("calibrated")
            else "-"
        ),
        "HNSW recall@10 (ms per user) at ef_search 256 / 512 / 1024 / 2048 / 4096": lambda r: (
            " / ".join(
                f"{v['recall']} ({v['ms per user']})"
                for v in r["ann recall@10"].get("by ef_search", {}).values()
            )
            or "-"
        ),
        "fast-mode training: one epoch s (fit with validation s)": lambda r: (
            f"{r['training']['epoch_seconds']} ({r['training']['fit_seconds']})"
            + (" (earlier run)" if r["training"].get("from an earlier run") else "")
            if "training" in r
            else "-"
        ),
    }
    for name, cell in rows.items():
        ordered = [report["sizes"][n] for n in sorted(report["sizes"], key=int)]
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in ordered) + " |")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
