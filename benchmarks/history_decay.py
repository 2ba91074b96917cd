"""How a history is read, learned on one shop and used on another: ``mean-of-items``' decay.

``mean-of-items`` ranks by the recency-weighted mean of the history's text vectors (the newest
item 1, the one before ``decay``, then ``decay**2``...; 0.8 by default). This scores each data
set's validation and test targets (``shared/EVALUATION.md``, full ranking, history excluded) at
every decay of ``DECAYS``, so that the decay chosen on one shop's validation split can be read
off against another shop's test split: the one part of reading a history that is learned
without any item of the shop.

Usage (give it the machine alone; about 2 minutes a data set with the text vectors cached)::

    python benchmarks/history_decay.py --data amazon-beauty amazon-games

Writes ``results/history_decay.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from promptrec import load_dataset
from promptrec.data.split import leave_last_out
from promptrec.evaluation.metrics import ndcg_at
from promptrec.scorers.text import MeanOfItemsScorer, TextSpace
from promptrec.train.grid import grid_ranks

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DECAYS = (1.0, 0.9, 0.8, 0.7, 0.5, 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["amazon-beauty", "amazon-games"])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    report: dict = {"decays": list(DECAYS), "ndcg10": {}}
    for name in args.data:
        started = time.perf_counter()
        splits = leave_last_out(load_dataset(SHARED / "data" / name))
        space = TextSpace()
        scorers = [MeanOfItemsScorer(space, decay=d) for d in DECAYS]
        report["ndcg10"][name] = {}
        for split_name in ("validation", "test"):
            split = splits[split_name]
            for scorer in scorers:
                scorer.fit(split.fit)

            def scores(hist, scorers=scorers):  # type: ignore[no-untyped-def]
                settings = [(s.decay, s.score(hist), None) for s in scorers]
                return np.zeros_like(settings[0][1]), settings

            res = grid_ranks(split, scores, varied=np.arange(split.fit.n_items))
            report["ndcg10"][name][split_name] = {
                str(d): round(ndcg_at(res[d][0], 10), 4) for d in DECAYS
            }
            print(name, split_name, report["ndcg10"][name][split_name], flush=True)
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "history_decay.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
