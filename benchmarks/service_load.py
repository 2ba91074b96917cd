"""Load benchmark of `promptrec serve` on loopback with the amazon-beauty catalogue (12k items).

Starts the server as a child process (one uvicorn worker), then drives it with a light asyncio
HTTP/1.1 client (keep-alive connections, no HTTP library overhead) in five phases:

1. known users at a fixed arrival rate (open loop): latency p50/p95/p99 at that rate;
2. known users with a live query (the query is encoded per request), at a fixed rate;
3. known users, closed loop with several connections: the sustained throughput;
4. phase 1 again after a million served lists were stored (``--history``, written through the
   store's own write path, as a long-running service would have left them);
5. the same with Prometheus scraping ``/metrics`` every second: the p99 must stay within 20%
   of phase 1's and a scrape under 50 ms (online counts are kept as lists are served, never
   recomputed from them).

Phases 1, 4 and 5 run in three rounds of ``--seconds / 1.5`` each, latencies pooled (4 and 5
alternate), so that a p99 is not one 30-second window's luck: on this machine the same phase,
repeated, moved its p99 by up to 20%.

Give it the machine alone (2 cores: the client takes a share of them). Writes
``results/service_load.json`` and ``.md``::

    python benchmarks/service_load.py --data ../shared/data/amazon-beauty
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np

from promptrec.service.impressions import new_request_id
from promptrec.service.process import LiveServer
from promptrec.service.state import Impression, ServiceState
from promptrec.store import Store

QUERIES = [
    "red nail polish",
    "moisturizer for dry skin",
    "shampoo for curly hair",
    "vanilla perfume",
    "waterproof mascara",
    "sunscreen spf 50",
    "anti aging night cream",
    "hair dryer",
    "lip balm",
    "makeup brush set",
]


MODIFIERS = ["gentle", "travel size", "for men", "organic", "long lasting", "cheap", "gift set"]


def query(i: int) -> str:
    """The i-th distinct live query: a base query, a modifier and a number of items."""
    base = QUERIES[i % len(QUERIES)]
    modifier = MODIFIERS[(i // len(QUERIES)) % len(MODIFIERS)]
    return f"{base} {modifier} pack of {i // (len(QUERIES) * len(MODIFIERS)) + 1}"


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        return await self._answer()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )
        return await self._answer()

    async def _answer(self) -> int:
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def open_loop(
    host: str,
    port: int,
    paths: list[str],
    rate: float,
    seconds: float,
    pool: int = 16,
    keep: bool = False,
) -> dict:
    """Requests arrive at ``rate`` per second whatever the server does; latency includes
    queueing (coordinated omission avoided: each request is timed from its scheduled start).
    With ``keep`` the raw latencies come back too (``"latencies"``), for pooling."""
    conns = [Connection(host, port) for _ in range(pool)]
    for c in conns:
        await c.open()
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    n = int(rate * seconds)

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i / rate
        conn = await free.get()
        try:
            status = await conn.get(paths[i % len(paths)])
            if status != 200:
                errors += 1
        finally:
            free.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    for c in conns:
        c.writer.close()
    result = summarise(latencies, errors, wall, target_rate=rate)
    if keep:
        result["latencies"] = latencies
    return result


async def closed_loop(host: str, port: int, paths: list[str], seconds: float, conns: int) -> dict:
    """``conns`` connections each sending the next request as soon as the last is answered."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        nonlocal errors
        conn = Connection(host, port)
        await conn.open()
        while time.perf_counter() < end:
            t = time.perf_counter()
            if await conn.get(paths[next(counter) % len(paths)]) != 200:
                errors += 1
            latencies.append(time.perf_counter() - t)
        conn.writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return summarise(latencies, errors, time.perf_counter() - start, connections=conns)


async def with_and_without_scrapes(
    host: str, port: int, paths: list[str], rate: float, seconds: float, rounds: int = 3
) -> tuple[dict, dict]:
    """:func:`open_loop` in ``rounds`` pairs of rounds of ``seconds``: one plain, one while a
    scraper GETs /metrics every second on its own connection (as Prometheus does). Pairs
    alternate, so both kinds see the same drift of the machine; each kind's latencies are
    pooled. Returns the plain and the scraped summaries (with the scrapes' latency)."""
    plain: list[float] = []
    scraped: list[float] = []
    scrapes: list[float] = []
    errors = {"plain": 0, "scraped": 0, "scrapes": 0}
    walls = {"plain": 0.0, "scraped": 0.0}

    async def scrape(done: asyncio.Event) -> None:
        scraper = Connection(host, port)  # a new one each round: idle ones are closed
        await scraper.open()
        while not done.is_set():
            t = time.perf_counter()
            if await scraper.get("/metrics") != 200:
                errors["scrapes"] += 1
            scrapes.append(time.perf_counter() - t)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(0.0, 1.0 - (time.perf_counter() - t)))
        scraper.writer.close()

    for _ in range(rounds):
        r = await open_loop(host, port, paths, rate, seconds, keep=True)
        plain += r["latencies"]
        errors["plain"] += r["errors"]
        walls["plain"] += r["seconds"]
        done = asyncio.Event()
        task = asyncio.create_task(scrape(done))
        r = await open_loop(host, port, paths, rate, seconds, keep=True)
        done.set()
        await task
        scraped += r["latencies"]
        errors["scraped"] += r["errors"]
        walls["scraped"] += r["seconds"]
    ms = np.array(scrapes) * 1000
    with_scrapes = summarise(scraped, errors["scraped"], walls["scraped"], target_rate=rate)
    with_scrapes.update(
        scrapes=len(scrapes),
        scrape_errors=errors["scrapes"],
        scrape_p50_ms=round(float(np.percentile(ms, 50)), 2),
        scrape_p99_ms=round(float(np.percentile(ms, 99)), 2),
        scrape_max_ms=round(float(ms.max()), 2),
    )
    return summarise(plain, errors["plain"], walls["plain"], target_rate=rate), with_scrapes


async def pooled(
    host: str, port: int, paths: list[str], rate: float, seconds: float, rounds: int = 3
) -> dict:
    """:func:`open_loop` ``rounds`` times, latencies pooled."""
    latencies: list[float] = []
    errors, wall = 0, 0.0
    for _ in range(rounds):
        r = await open_loop(host, port, paths, rate, seconds, keep=True)
        latencies += r["latencies"]
        errors += r["errors"]
        wall += r["seconds"]
    return summarise(latencies, errors, wall, target_rate=rate)


def store_served_lists(db: Path, n: int, items: list[str], users: list[str]) -> float:
    """Write ``n`` served lists of the last six days into the store (beside the running
    server, through :meth:`ServiceState.record_impressions`); returns the seconds it took."""
    rng = random.Random(1)
    now = time.time()
    started = time.perf_counter()
    with Store(db) as store:
        state = ServiceState(store)
        for start in range(0, n, 20_000):
            state.record_impressions(
                [
                    Impression(
                        new_request_id(),
                        rng.choice(users),
                        "main",
                        "zero-shot",
                        "mean-of-items",
                        tuple(rng.sample(items, 10)),
                        now - rng.random() * 6 * 86400,
                    )
                    for _ in range(min(20_000, n - start))
                ]
            )
    return time.perf_counter() - started


def summarise(latencies: list[float], errors: int, wall: float, **extra: float) -> dict:
    ms = np.array(latencies) * 1000
    return {
        **extra,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(wall, 1),
        "rate": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon-beauty"))
    parser.add_argument("--output", type=Path, default=Path("results/service_load"))
    parser.add_argument("--rate", type=float, default=200.0, help="known-user arrival rate")
    parser.add_argument("--query-rate", type=float, default=50.0, help="live-query rate")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--strategy", default="mean-of-items")
    parser.add_argument(
        "--history", type=int, default=1_000_000, help="served lists stored before phase 4"
    )

    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="promptrec-load-"))
    server = LiveServer(
        ["--db", str(work / "store.db"), "--data", str(args.data), "--strategy", args.strategy],
        work / "server.log",
    )
    started = time.perf_counter()
    server.start(timeout=900)
    startup = time.perf_counter() - started
    try:
        auth = {"X-API-Key": server.key}  # user ids are user data
        users = httpx.get(f"{server.url}/users", params={"limit": 1000}, headers=auth).json()[
            "users"
        ]
        random.Random(0).shuffle(users)
        known = [f"/recommend?{urlencode({'user_id': u, 'k': 10})}" for u in users]
        # every query distinct (the service does not cache query vectors, so each is encoded)
        queried = [
            f"/recommend?{urlencode({'user_id': u, 'k': 10, 'q': query(i)})}"
            for i, u in enumerate(users * 3)
        ]
        host, port = "127.0.0.1", server.port
        asyncio.run(closed_loop(host, port, known + queried, 5, 2))  # warm-up
        results = {
            "known_users": asyncio.run(  # pooled like phases 4 and 5: three rounds
                pooled(host, port, known, args.rate, args.seconds / 1.5)
            ),
            "live_query": asyncio.run(
                open_loop(host, port, queried, args.query_rate, args.seconds)
            ),
            "throughput": asyncio.run(
                closed_loop(host, port, known, args.seconds, args.connections)
            ),
        }
        with Store(work / "store.db") as store:  # a read beside the server
            catalogue = [str(i) for i in store.dataset().item_ids]
        fill = store_served_lists(work / "store.db", args.history, catalogue, users)
        asyncio.run(closed_loop(host, port, known, 5, 2))  # warm-up again
        results["known_users_history"], results["known_users_history_scraped"] = asyncio.run(
            with_and_without_scrapes(host, port, known, args.rate, args.seconds / 1.5)
        )
        for phase in ("known_users_history", "known_users_history_scraped"):
            results[phase]["stored_lists"] = args.history
        results["known_users_history_scraped"]["fill_seconds"] = round(fill, 1)
        items = httpx.get(f"{server.url}/health").json()["items"]
    finally:
        server.stop()
    report = {
        "data": str(args.data),
        "items": items,
        "strategy": args.strategy,
        "startup_seconds": round(startup, 1),
        "cpu": os.cpu_count(),
        "server": "promptrec serve, one uvicorn worker, torch 1 thread",
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Load on `promptrec serve` ({items} items, strategy {args.strategy}, "
        f"{os.cpu_count()} cores shared by server and client)",
        "",
        "| phase | load | requests | errors | achieved req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        load = (
            f"{r['target_rate']:.0f} req/s open loop"
            if "target_rate" in r
            else f"{r['connections']} connections closed loop"
        )
        if "stored_lists" in r:
            load += f", {r['stored_lists']:,} lists stored"
        if "scrapes" in r:
            load += ", /metrics scraped every second"
        lines.append(
            f"| {name} | {load} | {r['requests']} | {r['errors']} | {r['rate']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |"
        )
    history, base = results["known_users_history_scraped"], results["known_users"]
    ratio = history["p99_ms"] / base["p99_ms"]
    report["p99_ratio_history_scraped"] = round(ratio, 2)
    report["p99_ratio_history"] = round(
        results["known_users_history"]["p99_ms"] / base["p99_ms"], 2
    )
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines += [
        "",
        f"/metrics scraped {history['scrapes']} times with {history['stored_lists']:,} lists "
        f"stored: p50 {history['scrape_p50_ms']} ms, p99 {history['scrape_p99_ms']} ms, max "
        f"{history['scrape_max_ms']} ms ({history['scrape_errors']} errors). /recommend p99 "
        f"{history['p99_ms']} ms while scraped, "
        f"{results['known_users_history']['p99_ms']} ms between scrapes, against "
        f"{base['p99_ms']} ms before the lists were stored ({ratio:.2f}x, "
        f"{report['p99_ratio_history']:.2f}x). Storing the lists took "
        f"{history['fill_seconds']} s.",
    ]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
