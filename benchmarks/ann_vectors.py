"""How much the vectors decide the HNSW graph's recall: the same synthetic product titles
(``benchmarks/scale.py``'s shop) encoded by the model-free ``hashing`` stand-in and by the
default language model (all-MiniLM-L6-v2), the same graph settings (m 32, ef_construction
100), recall@10 against exact search for users made of 8 random items, at several
``ef_search``.

Slow on CPU (the language model encodes about 300 titles a second on 2 cores): give it the
machine alone. Writes ``results/ann_vectors.{json,md}``::

    python benchmarks/ann_vectors.py --items 200000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from promptrec.encoders import load_encoder
from promptrec.prompts.items import ItemPrompter
from promptrec.retrieval.index import HNSWIndex, IndexConfig
from scale import make_shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--output", type=Path, default=Path("results/ann_vectors"))
    args = parser.parse_args()
    items, _ = make_shop(args.items, 1000)
    texts = ItemPrompter(None).texts(items)
    rng = np.random.default_rng(0)
    picks = [rng.integers(0, len(items), 8) for _ in range(args.users)]
    report: dict = {"items": args.items, "users": args.users, "m": 32, "ef_construction": 100}
    for name in ("hashing", "default"):
        started = time.perf_counter()
        vectors = load_encoder(name).encode(texts, kind="document", show_progress=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        encode_s = time.perf_counter() - started
        queries = np.stack([vectors[p].mean(0) for p in picks]).astype(np.float32)
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        started = time.perf_counter()
        index = HNSWIndex(vectors, IndexConfig(kind="hnsw"))
        row: dict = {
            "encode_s": round(encode_s, 1),
            "build_s": round(time.perf_counter() - started, 1),
        }
        faiss.omp_set_num_threads(1)
        for ef in (128, 256, 512):
            index.config = IndexConfig(kind="hnsw", ef_search=ef)
            started = time.perf_counter()
            found, _ = index.search(queries, 10)
            ms = (time.perf_counter() - started) / len(queries) * 1000
            recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
            row[f"ef_search {ef}"] = {"recall@10": round(float(recall), 4), "ms": round(ms, 2)}
        report[name] = row
        print(name, row, flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"HNSW recall@10 against exact search, {args.items:,} synthetic product titles, "
        f"{args.users} users of 8 random items, m 32, ef_construction 100, one thread",
        "",
        "| vectors | encode s | build s | ef 128 | ef 256 | ef 512 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("hashing", "hashing (model-free)"), ("default", "all-MiniLM-L6-v2")):
        r = report[name]
        cells = [
            f"{r[f'ef_search {ef}']['recall@10']} ({r[f'ef_search {ef}']['ms']} ms)"
            for ef in (128, 256, 512)
        ]
        lines.append(f"| {label} | {r['encode_s']} | {r['build_s']} | " + " | ".join(cells) + " |")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
