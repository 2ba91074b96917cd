"""The approximate index against exact ranking on a real data set, by the evaluation protocol.

For every test user of ``--data`` (leave-one-out, ``../shared/EVALUATION.md``), the top-10
list of ``--strategy`` is ranked twice: exactly (every item scored) and through the HNSW index
(``promptrec.retrieval.index``). Reports NDCG@10 and Recall@10 of both lists against the test
targets, the share of the exact top-10 that the approximate list finds (recall@10), the same
with a category filter on, and the time per user. Writes ``results/ann.{json,md}``::

    python benchmarks/ann.py --data ../shared/data/amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from promptrec.data.loaders import load_dataset
from promptrec.data.split import leave_last_out
from promptrec.recommender import Recommender
from promptrec.retrieval.filters import Filters, item_facets
from promptrec.retrieval.index import IndexConfig


def list_metrics(lists: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """NDCG@10 and Recall@10 of top-10 lists (item indices) against one target per user."""
    hit = lists == targets[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    ndcg = np.where(rank > 0, 1 / np.log2(np.maximum(rank, 1) + 1), 0.0)
    return {"NDCG@10": float(ndcg.mean()), "Recall@10": float((rank > 0).mean())}


def rank(rec: Recommender, histories, filters: Filters | None) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    lists = []
    for start in range(0, len(histories), 256):
        batch = histories[start : start + 256]
        for r in rec.recommend(batch, 10, filters=filters):
            index = rec.data.item_index
            row = [index[i] for i in r.item_ids]
            lists.append(row + [-1] * (10 - len(row)))
    return np.array(lists, dtype=np.int64), (time.perf_counter() - started) / len(histories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon-beauty"))
    parser.add_argument("--strategy", default="mean-of-items")
    parser.add_argument("--output", type=Path, default=Path("results/ann"))
    args = parser.parse_args()

    split = leave_last_out(load_dataset(args.data))["test"]
    exact = Recommender(args.strategy, index=IndexConfig(kind="exact")).fit(split.fit)
    approx = Recommender(args.strategy, index=IndexConfig(kind="hnsw")).fit(split.fit)
    facets = item_facets(split.fit)
    counts = {label: len(facets.items_labelled(label)) for label in facets.all_categories}
    # a filter that keeps about a tenth of the catalogue
    category = min(counts, key=lambda c: abs(counts[c] - split.fit.n_items / 10))
    report: dict = {
        "data": str(args.data),
        "strategy": args.strategy,
        "items": split.fit.n_items,
        "users": len(split.histories),
        "index": {"kind": "hnsw", **vars(approx.index_config)},
        "cpu": os.cpu_count(),
        "runs": {},
    }
    for name, filters in (
        ("no filter", None),
        (f"category '{category}'", Filters(categories=[category])),
    ):
        want, exact_seconds = rank(exact, split.histories, filters)
        got, approx_seconds = rank(approx, split.histories, filters)
        found = [
            len(set(g[g >= 0]) & set(w[w >= 0])) / max((w >= 0).sum(), 1)
            for g, w in zip(got, want, strict=True)
        ]
        report["runs"][name] = {
            "exact": list_metrics(want, split.targets),
            "hnsw": list_metrics(got, split.targets),
            "recall@10 of the exact lists": float(np.mean(found)),
            "ms per user, exact": round(exact_seconds * 1000, 3),
            "ms per user, hnsw": round(approx_seconds * 1000, 3),
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Approximate (HNSW) against exact ranking: {args.data.name}, {args.strategy}, "
        f"{report['items']:,} items, {report['users']:,} test users",
        "",
        "| lists | NDCG@10 exact | NDCG@10 HNSW | Recall@10 exact | Recall@10 HNSW | "
        "HNSW finds of the exact top-10 | ms/user exact | ms/user HNSW |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["runs"].items():
        lines.append(
            f"| {name} | {r['exact']['NDCG@10']:.4f} | {r['hnsw']['NDCG@10']:.4f} | "
            f"{r['exact']['Recall@10']:.4f} | {r['hnsw']['Recall@10']:.4f} | "
            f"{r['recall@10 of the exact lists']:.4f} | {r['ms per user, exact']} | "
            f"{r['ms per user, hnsw']} |"
        )
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
