"""The search behind new items' borrowed ids (``promptrec.retrieval.neighbours``): every item
without an id embedding against every item with one, exact and through the inverted-file
index, on ``benchmarks/scale.py``'s synthetic product titles encoded by the model-free
``hashing`` stand-in (the ids split as on that shop's log of 5 million events: 46.5% of the
items have one; a bind borrows for the other 53.5%).

Give it the machine alone (about 10 minutes at the default 200,000 items). Writes
``results/neighbours-{items}.json``: seconds of each search, recall@10 of the inverted-file search
against the exact one, the exact search's time at a million items, extrapolated by pairs, and
the search kept on disk (``cached_nearest_rows``, 3 neighbours as the trained default
borrows): searched and saved, read back (a restart), and read back with 10 items added and 10
changed (a restart after catalogue changes)::

    python benchmarks/neighbours.py --items 200000
    python benchmarks/neighbours.py --items 1000000 --no-exact  # the inverted file alone

(each size writes its own ``results/neighbours-{items}.json``)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from promptrec.encoders import load_encoder
from promptrec.prompts.items import ItemPrompter
from promptrec.retrieval import neighbours
from promptrec.retrieval.neighbours import nearest_rows
from scale import make_shop

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--no-exact", action="store_true", help="skip the exact search")
    args = parser.parse_args()
    items, _ = make_shop(args.items, 1000)
    vectors = load_encoder("hashing").encode(ItemPrompter(None).texts(items), kind="document")
    vectors = np.asarray(vectors, dtype=np.float32)
    order = np.random.default_rng(0).permutation(args.items)
    donors = vectors[order[: int(0.465 * args.items)]]
    lacking = vectors[order[int(0.465 * args.items) :]]
    report: dict = {"items": args.items, "with an id": len(donors), "without": len(lacking)}

    started = time.perf_counter()
    approximate = nearest_rows(lacking, donors, 10)  # above EXACT_UP_TO at this size
    report["inverted file s"] = round(time.perf_counter() - started, 1)
    report["groups"], report["probed"] = neighbours.lists(len(donors)), neighbours.PROBED

    with tempfile.TemporaryDirectory() as folder:
        kept = report["kept on disk, 3 neighbours"] = {}
        changed = lacking.copy()
        changed[:10] = vectors[order[:10]] * 0.5 + lacking[:10] * 0.5  # 10 texts changed
        changed = np.vstack([changed, vectors[order[10:20]] * 0.5 + lacking[10:20] * 0.5])
        for name, queries in (
            ("searched and saved s", lacking),
            ("read back s", lacking),
            ("read back, 20 queries searched s", changed),
        ):
            started = time.perf_counter()
            neighbours.cached_nearest_rows(queries, donors, 3, cache_dir=folder)
            kept[name] = round(time.perf_counter() - started, 1)

    if not args.no_exact:
        neighbours.EXACT_UP_TO = len(lacking) * len(donors)  # the exact search, forced
        started = time.perf_counter()
        exact = nearest_rows(lacking, donors, 10)
        report["exact s"] = round(time.perf_counter() - started, 1)
        pairs_1m = 465_000 * 535_000  # a million items, the same split
        scale = pairs_1m / (len(lacking) * len(donors))
        report["exact s at 1M items, extrapolated"] = round(report["exact s"] * scale)
        recall = [len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact, strict=True)]
        report["recall@10"] = round(float(np.mean(recall)), 4)
        first = np.mean(approximate[:, 0] == exact[:, 0])
        report["nearest found (recall@1)"] = round(float(first), 4)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"neighbours-{args.items}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
