"""The feedback loop, offline: serve, record what users did, retrain, serve again.

The log is cut by time into a base (``--base`` of its events) and ``--slices`` equal slices
after it (or by position: ``--cut last`` below). At the start of each slice every user active
in it is served a list of 10 from the current model, given their history so far (history
excluded, full ranking); a hit is the user's next logged item (their first in the slice) in
that list: the offline stand-in for a click-through rate. Then the slice's events join the log
and the model is retrained on it:

* ``none``: the base model throughout, bound to the grown log (as a running service does: the
  new events enter the users' histories, not the weights nor the co-occurrence table, which
  was counted on the base log);
* ``warm``: warm start from the current model (:mod:`promptrec.train.warm`);
* ``scratch``: ``promptrec train`` defaults from scratch.

Usage::

    python benchmarks/feedback_loop.py --data movielens-100k --slices 4
    python benchmarks/feedback_loop.py --data movielens-100k --variants none,warm --seed 1
    python benchmarks/feedback_loop.py --data amazon-beauty --cut last --slices 3 \
        --checkpoints results/tmp/loop   # over several sittings

A log ordered by position rather than time (amazon-beauty's: no clock common to its users) is
cut with ``--cut last``: the base is every user's log but their last ``--slices`` events, and
slice k holds each user's k-th of those (the last slice: their last events).

``--checkpoints DIR`` checkpoints every epoch of each training in ``DIR`` and keeps each trained
model there: a run stopped at any moment goes on where it stopped when started again (a kept
model is reused once its ``train_log`` fingerprint is checked), each retraining's time summed
over its sittings.

Writes ``results/feedback_loop-<data>.json`` and ``.md`` (``-seed<N>`` added for ``--seed N``
other than 0; hit rate per slice, each retraining's time on this machine).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec import load_dataset
from promptrec.data.dataset import Dataset, build_histories, chronological
from promptrec.data.split import Split
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.scorers.base import Scorer
from promptrec.train import TrainConfig, Trainer
from warm_start import fit_over_sittings, keep, reused

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VARIANTS = ("none", "warm", "scratch")


def slice_split(log: Dataset, added: Dataset) -> Split:
    """The users active in ``added`` with a history in ``log``: their history so far, and
    their first item in ``added`` as the target."""
    index = log.item_index
    before = build_histories(log.events, index)
    first = chronological(added.events).groupby("user_id", sort=False).head(1)
    first = first[first["user_id"].isin(before) & first["item_id"].map(index).notna()]
    histories = [before[u] for u in first["user_id"]]
    targets = first["item_id"].map(index).to_numpy(dtype=np.int64)
    return Split("test", log, histories, targets)


def cut_log(events: pd.DataFrame, base: float, slices: int, cut: str) -> list[pd.DataFrame]:
    """The base log and the slices after it, in order. ``time``: the oldest ``base`` share of
    the events by time, then ``slices`` equal shares; ``last`` (a log of positions, with no
    clock common to its users): all but each user's last ``slices`` events, then each user's
    ``slices``-th last event, ..., each user's last one."""
    if cut == "time":
        ordered = events.sort_values("timestamp", kind="stable")
        edges = np.linspace(base, 1.0, slices + 1)
        cuts = [0] + [int(round(e * len(ordered))) for e in edges]
        return [ordered.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    ordered = chronological(events)
    from_end = ordered.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    return [ordered[from_end >= slices]] + [
        ordered[from_end == slices - 1 - k] for k in range(slices)
    ]


def trained(
    name: str, make: Callable[[Path | None], Trainer], log: Dataset, store: Path | None
) -> tuple[Scorer, float]:
    """The model ``make`` trains on ``log``, with its training time. With a ``store``, the model
    kept there under ``name`` if a sitting before trained it, else one trained now with a
    checkpoint every epoch (resumed from one a stopped sitting left) and kept at once."""
    if store is None:
        return fit_over_sittings(make, log, None)
    kept = store / name / "model"
    if kept.exists():
        return reused(str(kept), log)
    model, seconds = fit_over_sittings(make, log, store / name / "checkpoints")
    keep(model, kept, log, seconds)
    return model, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--base", type=float, default=0.6, help="share of events in the base")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument(
        "--cut",
        choices=("time", "last"),
        default="time",
        help="time: slices of the log by time; last: each user's last events, one a slice",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="checkpoint each training here and keep its model: a stopped run goes on where "
        "it stopped (its retraining times then add up the sittings)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the trainings' seed (a warm start keeps its model's): another run of the same loop",
    )
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    store = Path(args.checkpoints) / args.data if args.checkpoints else None

    def scratch(checkpoints: Path | None) -> Trainer:
        return Trainer(TrainConfig(seed=args.seed), progress=False, checkpoint_dir=checkpoints)

    def warm_from(old: Scorer, checkpoints: Path | None) -> Trainer:
        return Trainer(init_from=old, progress=False, checkpoint_dir=checkpoints)

    data = load_dataset(SHARED / "data" / args.data)
    parts = cut_log(data.events, args.base, args.slices, args.cut)
    variants = args.variants.split(",")
    result: dict = {
        "data": args.data,
        "cut_by": args.cut,
        "seed": args.seed,
        "events": len(data.events),
        "base_events": len(parts[0]),
        "slices": [],
        "variants": variants,
    }
    base = data.with_events(parts[0].sort_index())
    first, seconds = trained("base", scratch, base, store)
    result["base_train_seconds"] = round(seconds, 1)
    models = dict.fromkeys(variants, first)
    print(f"{args.data}: base model on {len(parts[0])} events, {result['base_train_seconds']} s")
    for s in range(args.slices):
        log = data.with_events(pd.concat(parts[: s + 1]).sort_index())
        added = data.with_events(parts[s + 1])
        split = slice_split(log, added)
        row: dict = {"slice": s + 1, "events": len(added.events), "users": len(split.histories)}
        for name in variants:
            res = evaluate_scorer(models[name], split, progress=False)
            row[name] = {"hit_rate": round(res.metrics["Recall@10"], 6)}
        grown = data.with_events(pd.concat(parts[: s + 2]).sort_index())
        if s + 1 < args.slices:  # the last slice's retraining would serve nothing
            for name in (v for v in variants if v != "none"):
                make = scratch if name == "scratch" else partial(warm_from, models[name])
                models[name], seconds = trained(f"{name}-{s + 1}", make, grown, store)
                row[name]["retrain_seconds"] = round(seconds, 1)
        result["slices"].append(row)
        print(json.dumps(row), flush=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"feedback_loop-{args.data}" + (f"-seed{args.seed}" if args.seed else "")
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
        (out / f"{stem}.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    variants = result["variants"]
    lines = [
        f"# Feedback loop: {result['data']}"
        + (f", seed {result['seed']}" if result.get("seed") else ""),
        "",
        f"Base model on the oldest {result['base_events']:,} of {result['events']:,} events "
        + ("by time; " if result.get("cut_by", "time") == "time" else "by each user's order; ")
        + "then each slice: every active user served 10 items from the current model, a hit when "
        "their next logged item is among them; then retrained on the slice "
        "(`python benchmarks/feedback_loop.py`).",
        "",
        "| slice | events | users | " + " | ".join(f"{v} hit rate" for v in variants) + " | "
        "retraining s (" + ", ".join(v for v in variants if v != "none") + ") |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in variants) + " | ---: |",
    ]
    for row in result["slices"]:
        hits = " | ".join(f"{row[v]['hit_rate']:.4f}" for v in variants)
        times = ", ".join(str(row[v].get("retrain_seconds", "-")) for v in variants if v != "none")
        lines.append(
            f"| {row['slice']} | {row['events']:,} | {row['users']:,} | {hits} | {times} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
