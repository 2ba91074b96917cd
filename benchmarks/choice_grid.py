"""The trainer's choices after early stopping, timed: the co-occurrence grid and the new-item
grid (``promptrec.train.grid``) on a data set's validation targets, with a saved fast-mode
model standing in for the early-stopped one.

Usage (give it the machine alone; under a minute on amazon-beauty)::

    python benchmarks/choice_grid.py --model MODEL_DIR --data amazon-beauty

Writes ``results/choice_grid-{data}.json``: each choice's seconds, what it chose and its grid's
NDCG@10 column (to compare two versions of the code: run it with each on ``PYTHONPATH``).

``--synthetic N`` times the grid machinery alone at ``N`` items, the new-item choice's shape
(80 settings; scores drawn at random; a quarter of the items left out of every list, as the
items nobody touched are; 28.5% of them rescored by each setting, as the touched items without
an id embedding are on ``benchmarks/scale.py``'s shop of a million items and 5 million events),
for 100 users, and writes ``results/choice_grid-synthetic-{N}.json``::

    python benchmarks/choice_grid.py --synthetic 1000000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec import load_dataset
from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import Split, leave_last_out
from promptrec.scorers.popularity import item_counts
from promptrec.train.cooccurrence import choose_cooccurrence
from promptrec.train.grid import grid_ranks
from promptrec.train.load import load_model
from promptrec.train.new_items import choose_new_items

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def synthetic(n_items: int, n_users: int = 100) -> dict:
    """Seconds of :func:`grid_ranks` over ``n_users`` users, new-item shaped (see above)."""
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((n_users, n_items), dtype=np.float32)
    left_out = rng.choice(n_items, n_items // 4, replace=False)
    listed = np.setdiff1d(np.arange(n_items), left_out)
    varied = np.sort(rng.choice(listed, int(0.285 * n_items), replace=False))
    histories = [
        UserHistory(f"u{u}", rng.choice(listed, 20, replace=False), None, None, None, None)
        for u in range(n_users)
    ]
    split = Split("validation", Dataset.__new__(Dataset), histories, rng.choice(listed, n_users))
    split.fit.items = pd.DataFrame({"item_id": np.arange(n_items).astype(str)})
    rows = {h.user_id: u for u, h in enumerate(histories)}

    def rescoring(columns: np.ndarray):  # type: ignore[no-untyped-def]
        """A batch's shared scores, and 80 settings each scaling ``columns`` differently."""

        def settings_scores(hist):  # type: ignore[no-untyped-def]
            fixed = scores[[rows[h.user_id] for h in hist]]
            base = fixed[:, columns]
            scored = np.empty_like(base)

            def settings():  # type: ignore[no-untyped-def]
                for name in range(80):
                    np.multiply(base, np.float32(0.9 + name / 200), out=scored)
                    yield name, scored, None

            return fixed, settings()

        return settings_scores

    report = {"items": n_items, "users": n_users, "settings": 80, "left_out": len(left_out)}
    # the new-item choice rescores the listed items without an id; before, it also rescored
    # the left-out ones (what the second row times)
    shapes = {"varied: listed new items": varied}
    shapes["varied: new items, left out included"] = np.union1d(varied, left_out)
    for name, columns in shapes.items():
        started = time.perf_counter()
        grid_ranks(split, rescoring(columns), varied=columns, left_out=left_out)
        seconds = round(time.perf_counter() - started, 1)
        report[name] = {"columns": len(columns), "seconds": seconds}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained fast-mode model's folder")
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--users", type=int, default=5000, help="validation users (trainer's)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--synthetic", type=int, help="time the grid alone at N items")
    args = parser.parse_args()
    if args.synthetic:
        report = synthetic(args.synthetic)
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"choice_grid-synthetic-{args.synthetic}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(report)
        return
    if args.model is None:
        parser.error("--model is required (or --synthetic N)")
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
