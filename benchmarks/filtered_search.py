"""Category-filtered lists of a served store, timed in process (the engine's ``recommend``,
one thread, as a worker runs it): what ``benchmarks/scale.py``'s HTTP phase measures, without
the server, for a quick check after a change to filtered search.

Usage (a store ``benchmarks/scale.py --work DIR`` ingested, the ``hashing`` encoder)::

    python benchmarks/filtered_search.py DIR/shop-1000000.db --categories Makeup,Lipstick

Writes ``results/filtered_search.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from promptrec.retrieval.filters import Filters
from promptrec.service.config import EngineConfig
from promptrec.service.engine import Engine
from promptrec.store import Store
from promptrec.threads import one_thread_per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--categories", default="Makeup,Lipstick")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--output", type=Path, default=Path("results/filtered_search.json"))
    args = parser.parse_args()
    one_thread_per_request()
    engine = Engine(Store(args.db), EngineConfig(encoder="hashing", claim_service=False))
    report: dict = {"db": Path(args.db).name, "items": engine.snapshot.data.n_live}
    try:
        for category in args.categories.split(","):
            ms = []
            for u in range(args.users):
                started = time.perf_counter()
                engine.recommend(f"u{u}", k=10, filters=Filters(categories=[category]))
                ms.append((time.perf_counter() - started) * 1000)
            report[category] = {
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
            }
            print(category, report[category], flush=True)
    finally:
        engine.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
