"""Another shop through a fast-mode model: does its text path transfer?

A fast-mode model refuses a catalogue that shares fewer than half of its training items (see
``promptrec.train.trained``). This measures why: it binds a model trained on one shop to another
shop's catalogue anyway (every item new to it, every user's history of items it has no id
for), and scores the other shop's validation and test targets (``shared/EVALUATION.md``) with
the model's vectors alone, the text match alone (the user's mean unit history text vector . the
items' centred unit text vectors, ``ScoringConfig.new_item_text_weight``), and the two added at
several weights. The co-occurrence term is off: nothing is fitted to the other shop's log.

Usage (give it the machine alone; about 4 minutes on amazon-games)::

    python benchmarks/transfer_fast.py --model MODEL_DIR --data amazon-games

Writes ``results/transfer-fast-{model folder}-to-{data}.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import promptrec.train.trained as trained
from promptrec import load_dataset
from promptrec.data.split import leave_last_out
from promptrec.evaluation.metrics import ndcg_at
from promptrec.train.grid import grid_ranks
from promptrec.train.load import load_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", default="amazon-games")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    trained.MIN_ITEM_OVERLAP = 0.0  # bind to the other shop on purpose: that is the question
    started = time.perf_counter()
    splits = leave_last_out(load_dataset(SHARED / "data" / args.data))
    scorer = load_model(args.model)
    scorer.scoring.cooccurrence_weight = 0.0
    scorer.scoring.new_item_text_weight = 0.0
    scorer.scoring.borrowed_ids, scorer.scoring.new_item_scale = 0, 1.0
    report: dict = {"model": str(args.model), "data": args.data, "ndcg10": {}}
    for name in ("validation", "test"):
        split = splits[name]
        scorer.fit(split.fit)
        centred = scorer.centred_text(scorer.space.vectors)

        def scores(hist, centred=centred):  # type: ignore[no-untyped-def]
            model = scorer.user_vectors(hist) @ scorer.item_vectors.T
            match = scorer.history_text(hist) @ centred.T
            settings = [
                (f"model + {w} x text match", model + np.float32(w) * match, None) for w in WEIGHTS
            ]
            return np.zeros_like(model), [*settings, ("text match alone", match, None)]

        every_item = np.arange(split.fit.n_items)  # each setting scores every item
        res = grid_ranks(split, scores, varied=every_item)
        report["ndcg10"][name] = {k: round(ndcg_at(r, 10), 4) for k, (r, _) in res.items()}
        print(name, report["ndcg10"][name], flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"transfer-fast-{args.model.name}-to-{args.data}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
