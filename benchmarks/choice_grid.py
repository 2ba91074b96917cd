"""The trainer's choices after early stopping, timed: the co-occurrence grid and the new-item
grid (``promptrec.train.grid``) on a data set's validation targets, with a saved fast-mode
model standing in for the early-stopped one.

Usage (give it the machine alone; under a minute on amazon-beauty)::

    python benchmarks/choice_grid.py --model MODEL_DIR --data amazon-beauty

Writes ``results/choice_grid-{data}.json``: each choice's seconds, what it chose and its grid's
NDCG@10 column (to compare two versions of the code: run it with each on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from promptrec import load_dataset
from promptrec.data.split import leave_last_out
from promptrec.scorers.popularity import item_counts
from promptrec.train.cooccurrence import choose_cooccurrence
from promptrec.train.load import load_model
from promptrec.train.new_items import choose_new_items

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--users", type=int, default=5000, help="validation users (trainer's)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    data = load_dataset(SHARED / "data" / args.data)
    val = leave_last_out(data)["validation"].sample(args.users, 0)
    model = load_model(args.model)
    model.scoring.cooccurrence_weight = 0.0
    model.fit(val.fit)
    started = time.perf_counter()
    cooccurrence = choose_cooccurrence(model, val)
    cooccurrence_s = time.perf_counter() - started
    model.scoring.cooccurrence_weight = cooccurrence["weight"]
    model.scoring.cooccurrence_decay = cooccurrence["decay"]
    model.fit(val.fit)
    started = time.perf_counter()
    new_items = choose_new_items(model, val, untouched=item_counts(data) == 0)
    new_items_s = time.perf_counter() - started
    report = {
        "model": str(args.model),
        "data": args.data,
        "validation_users": len(val.histories),
        "cooccurrence": {
            "seconds": round(cooccurrence_s, 1),
            "chosen": [cooccurrence["weight"], cooccurrence["decay"], cooccurrence["ndcg10"]],
            "grid_ndcg10": [g["ndcg10"] for g in cooccurrence["grid"]],
        },
        "new_items": {
            "seconds": round(new_items_s, 1),
            "chosen": [new_items["borrowed_ids"], new_items["scale"], new_items["text_weight"]],
            "grid_ndcg10": [g["ndcg10"] for g in new_items["grid"]],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"choice_grid-{args.data}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "grid_ndcg10"}, indent=1)[:800])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
