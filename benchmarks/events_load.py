"""``POST /events`` under load: acknowledged single-event requests a second, and how many of
them shared a durable commit (group commit, ``promptrec.service.state.group``).

Starts ``promptrec serve --workers N`` on a store of the data set (the model-free default
strategy: the events path does not depend on the model), then each phase keeps ``C``
connections each sending one single-event request as soon as the last was answered (closed
loop, the light HTTP/1.1 client of ``service_load.py``) for ``--seconds``. An answer of 200
means the event is on disk (``synchronous=FULL``, WAL). Each phase also reports the CPU time
spent per acknowledged event by the server (all its processes, from ``/proc``) and by the
client: on 2 shared cores their sum bounds the rate, and unlike the rate it hardly depends on
what else the machine is doing.

Give it the machine alone (the client shares the 2 cores). Writes
``results/events_load.json`` and ``.md``::

    python benchmarks/events_load.py --connections 4,16,64 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import tempfile
import time
from pathlib import Path

import httpx

from promptrec.service.process import LiveServer
from promptrec.store import Store
from service_load import Connection, summarise


async def post_loop(
    host: str, port: int, key: str, items: list[str], seconds: float, conns: int
) -> dict:
    """``conns`` connections, each posting one event as soon as the last is acknowledged."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker(c: int) -> None:
        nonlocal errors
        rng = random.Random(c)
        conn = Connection(host, port)
        await conn.open()
        while time.perf_counter() < end:
            event = {
                "user_id": f"load-{c}-{rng.randrange(1000)}",
                "item_id": rng.choice(items),
                "event": "view",
            }
            body = json.dumps({"events": [event]}).encode()
            t = time.perf_counter()
            if await conn.post("/events", body, {"X-API-Key": key}) != 200:
                errors += 1
            latencies.append(time.perf_counter() - t)
        conn.writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(conns)))
    return summarise(latencies, errors, time.perf_counter() - start, connections=conns)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and all its descendants (Linux ``/proc``)."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family = {pid}
    grew = True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in family and child not in family:
                family.add(child)
                grew = True
    return sum(seconds for p, (_, seconds) in stats.items() if p in family)


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_sizes(url: str, key: str, workers: int) -> list[float]:
    """Writes per commit in each worker that answers a scrape (a scrape reaches one worker)."""
    seen: dict[str, float] = {}
    for _ in range(workers * 8):
        text = httpx.get(f"{url}/metrics", headers={"X-API-Key": key}).text
        commits = re.search(r"^promptrec_event_commits_total (\S+)", text, re.M)
        writes = re.search(r"^promptrec_event_writes_total (\S+)", text, re.M)
        if commits and writes and float(commits[1]):
            seen[commits[1]] = round(float(writes[1]) / float(commits[1]), 2)
    return sorted(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon-beauty"))
    parser.add_argument("--output", type=Path, default=Path("results/events_load"))
    parser.add_argument("--connections", default="4,16,64")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--label", default="group commit")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="promptrec-events-"))
    db = work / "store.db"
    with Store(db) as store:
        store.ingest(args.data)
        items = [str(i) for i in store.dataset().item_ids[:2000]]
    server = LiveServer(["--db", str(db), "--workers", str(args.workers)], work / "server.log")
    server.start(timeout=900)
    results: dict = {}
    try:
        host, port = "127.0.0.1", server.port
        asyncio.run(post_loop(host, port, server.key, items, 3, 4))  # warm-up
        for conns in (int(c) for c in args.connections.split(",")):
            server_cpu, client_cpu = cpu_seconds(server.proc.pid), client_cpu_seconds()
            r = asyncio.run(post_loop(host, port, server.key, items, args.seconds, conns))
            acknowledged = max(r["requests"] - r["errors"], 1)
            r["server_cpu_ms"] = round(
                1000 * (cpu_seconds(server.proc.pid) - server_cpu) / acknowledged, 3
            )
            r["client_cpu_ms"] = round(1000 * (client_cpu_seconds() - client_cpu) / acknowledged, 3)
            results[str(conns)] = r
            print(conns, r, flush=True)
        groups = group_sizes(server.url, server.key, args.workers)
    finally:
        server.stop()
    report = {
        "label": args.label,
        "data": str(args.data),
        "workers": args.workers,
        "seconds": args.seconds,
        "writes_per_commit_by_worker": groups,
        "results": results,
    }
    path = args.output.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous[args.label] = report
    path.write_text(json.dumps(previous, indent=2) + "\n")
    lines = [
        f"`POST /events`, one event a request, closed loop, `promptrec serve --workers "
        f"{args.workers}` (`python benchmarks/events_load.py`; client and server share the "
        "machine's 2 cores)",
        "",
        "| server | connections | acknowledged/s | p50 ms | p99 ms | errors | server CPU ms "
        "an event | client CPU ms an event |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rep in previous.items():
        for conns, r in rep["results"].items():
            lines.append(
                f"| {label} | {conns} | {r['rate']} | {r['p50_ms']} | {r['p99_ms']} | "
                f"{r['errors']} | {r.get('server_cpu_ms', '-')} | {r.get('client_cpu_ms', '-')} |"
            )
    for label, rep in previous.items():
        if rep["writes_per_commit_by_worker"]:
            lines.append(
                f"\n{label}: writes per commit, by worker, over the whole run: "
                f"{rep['writes_per_commit_by_worker']}"
            )
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
