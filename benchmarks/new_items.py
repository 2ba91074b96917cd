"""New items: how well each model recommends items nobody has touched yet.

A seeded 10% of the catalogue is hidden from training entirely: every interaction with those
items leaves the log (training and users' histories alike), as if they had just been added.
The test targets (``shared/EVALUATION.md``: each user's last interaction) that are hidden items
are then ranked against the full catalogue, history items excluded. Text makes such an item
recommendable from its first minute; an ID-based model has never seen it, so it ranks it at
chance at best (popularity and ItemKNN below; the peers of ``shared/BASELINES.md`` likewise).

Reported per model: NDCG@10, Recall@10 and the median rank of the hidden targets, with the
expected NDCG@10 of a random ranking for reference; NDCG@10 on the other test targets (what
a change for new items costs the rest); and the share of the top-10 places, over all test
users, that hidden items take. Fine-tuning uses the ``train`` defaults, early-stopped on the
usual validation targets of the reduced log (never on these targets), which also choose how
items without an id embedding are scored (``borrowed_ids``, ``new_item_scale``,
``new_item_text_weight``: see ``promptrec.train.new_items``). The same model is then scored
at the other points of that choice given by ``--settings`` (set by hand to trace the trade-off
on test, not chosen on it), and the trainer's validation grid is written beside the table.

Usage (give it the machine alone)::

    python benchmarks/new_items.py --data amazon-beauty
    python benchmarks/new_items.py --train-config '{"id_dropout": 0.5}' --keep

``--train-config`` trains with those settings over the defaults (a row of its own); ``--keep``
keeps the fine-tuned rows of the earlier results that this run does not train again.
Writes ``results/new_items.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from promptrec import load_dataset
from promptrec.data.dataset import UserHistory
from promptrec.data.split import Split, leave_last_out
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.scorers import make_scorer
from promptrec.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def hidden_split(data_dir: Path, share: float, seed: int) -> tuple[Split, Split, np.ndarray]:
    """The test split of the log without the hidden items' interactions: the users whose
    test target is a hidden item, the other users; and which items are hidden."""
    data = load_dataset(data_dir)
    rng = np.random.default_rng(seed)
    n_hidden = round(share * data.n_items)
    hidden_ids = set(data.item_ids[rng.choice(data.n_items, n_hidden, replace=False)])
    test = leave_last_out(data)["test"]
    hidden = np.zeros(data.n_items, dtype=bool)
    hidden[[data.item_index[i] for i in hidden_ids]] = True
    # training: the log without the test targets and without any hidden item
    fit_events = test.fit.events[~test.fit.events["item_id"].isin(hidden_ids)]
    fit = data.with_events(fit_events)
    histories, targets, others, other_targets = [], [], [], []
    for h, target in zip(test.histories, test.targets, strict=True):
        keep = ~hidden[h.items]  # nobody has touched a hidden item: not in histories either
        (histories if hidden[target] else others).append(
            UserHistory(
                h.user_id,
                h.items[keep],
                tuple(e for e, k in zip(h.events, keep, strict=True) if k) if h.events else (),
                h.values[keep] if len(h.values) else h.values,
                h.timestamps[keep] if len(h.timestamps) else h.timestamps,
                tuple(q for q, k in zip(h.queries, keep, strict=True) if k) if h.queries else (),
            )
        )
        (targets if hidden[target] else other_targets).append(target)
    return (
        Split("test", fit, histories, np.array(targets, dtype=np.int64)),
        Split("test", fit, others, np.array(other_targets, dtype=np.int64)),
        hidden,
    )


def random_ndcg10(n_items: int) -> float:
    """Expected NDCG@10 of one target ranked uniformly at random among ``n_items``."""
    return float(sum(1 / np.log2(r + 1) for r in range(1, 11)) / n_items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--share", type=float, default=0.10, help="items hidden")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--train-config", default=None, help="JSON settings over the train defaults"
    )
    parser.add_argument("--keep", action="store_true", help="keep earlier fine-tuned rows")
    parser.add_argument(
        "--settings",
        default="3:1.0:0,3:1.1:0,3:1.2:0,3:0.9:0.2,3:1.0:0.2,3:1.0:0.3,3:1.1:0.3",
        help="BORROWED_IDS:SCALE:TEXT_WEIGHT,... : also score the trained model with items "
        "lacking an id embedding borrowing the mean id of this many text neighbours, scored at "
        "this scale, plus their text's match with the history at this weight "
        "(TrainedScorer.scoring: borrowed_ids, new_item_scale, new_item_text_weight)",
    )
    args = parser.parse_args()
    earlier = args.out / "new_items.json"
    kept = json.loads(earlier.read_text())["models"] if args.keep and earlier.exists() else {}
    split, others, hidden = hidden_split(SHARED / "data" / args.data, args.share, args.seed)
    n_hidden = int(hidden.sum())
    print(f"{n_hidden} items hidden; {len(split.histories)} test targets among them", flush=True)
    rows: dict[str, dict] = {}

    def score(name: str, scorer, seconds: float | None = None) -> None:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        res = evaluate_scorer(scorer, split, progress=False)
        # the price on the other targets (items the model trained on)
        rest = evaluate_scorer(scorer, others, progress=False)
        shown = np.concatenate([res.top10, rest.top10])
        rows[name] = {
            "NDCG@10": round(res.metrics["NDCG@10"], 6),
            "Recall@10": round(res.metrics["Recall@10"], 6),
            "median rank": int(np.median(res.ranks)),
            "seconds": round((seconds or 0.0) + time.perf_counter() - started, 1),
            "NDCG@10, other targets": round(rest.metrics["NDCG@10"], 6),
            "hidden items' share of the top 10": round(float(hidden[shown].mean()), 4),
        }
        print(name, rows[name], flush=True)

    for name in ("popularity", "itemknn", "mean-of-items"):
        score(name, make_scorer(name))
    settings = json.loads(args.train_config) if args.train_config else {}
    name = "fine-tuned (train defaults)"
    if settings:
        name = "fine-tuned ({})".format(", ".join(f"{k} {v}" for k, v in settings.items()))
    for earlier_name, row in kept.items():
        if earlier_name.startswith("fine-tuned") and not earlier_name.startswith(name):
            rows[earlier_name] = row
    started = time.perf_counter()
    trained = Trainer(TrainConfig(**settings)).fit(split.fit)
    score(name, trained, time.perf_counter() - started)
    validation = trained.info.get("summary", {}).get("validation_ndcg10")
    if validation is not None:
        rows[name]["validation NDCG@10 (reduced log)"] = validation
    weight = trained.scoring.cooccurrence_weight
    s = trained.scoring
    chosen = (s.borrowed_ids, s.new_item_scale, s.new_item_text_weight)
    rows[name]["new items (chosen)"] = (
        f"ids from {chosen[0]} neighbours, scale {chosen[1]}, text match x{chosen[2]}"
    )
    if weight > 0:  # the same model without the item co-occurrence term
        trained.scoring.cooccurrence_weight = 0.0  # applied when it is fitted to the data
        score(f"{name}, co-occurrence off", trained)
        trained.scoring.cooccurrence_weight = weight
    for setting in filter(None, args.settings.split(",")):
        parts = setting.split(":")
        point = (int(parts[0]), float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0)
        if point == chosen:
            continue
        s.borrowed_ids, s.new_item_scale, s.new_item_text_weight = point  # applied at fit
        score(
            f"{name}, set: ids from {point[0]} text neighbours, new items x{point[1]}, "
            f"text match x{point[2]}",
            trained,
        )
    s.borrowed_ids, s.new_item_scale, s.new_item_text_weight = chosen
    choice = trained.info.get("new_item_choice", {})
    grid = choice.get("grid", [])
    report = {
        "data": args.data,
        "hidden items": n_hidden,
        "share": args.share,
        "seed": args.seed,
        "targets": len(split.histories),
        "catalogue": split.fit.n_items,
        "random NDCG@10": round(random_ndcg10(split.fit.n_items), 6),
        "models": rows,
        "trainer's choice": {k: v for k, v in choice.items() if k != "grid"},
        "validation grid (trainer, items scored as new)": grid,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "new_items.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"New items: {args.data}, {n_hidden} of {split.fit.n_items} items ({args.share:.0%}, "
        f"seed {args.seed}) hidden from training; {len(split.histories)} test targets among "
        "them, ranked against the full catalogue",
        "",
        "| model | NDCG@10 | Recall@10 | median rank | NDCG@10, other targets "
        "| hidden items' share of the top 10 | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    share = "hidden items' share of the top 10"
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['NDCG@10']:.4f} | {r['Recall@10']:.4f} | {r['median rank']} | "
            f"{cell(r.get('NDCG@10, other targets'))} | "
            f"{cell(r.get(share))} | {r['seconds']} |"
        )
    lines.append(f"| random ranking (expected) | {report['random NDCG@10']:.4f} | | | | | |")
    if grid:
        lines += [
            "",
            "The trainer's choice (validation targets of the reduced log, a seeded 10% of the "
            "items with an id embedding scored as new; NDCG@10 over all targets picks):",
            "",
            "| ids borrowed from | scale | text match | NDCG@10 | NDCG@10, targets scored as new "
            "| NDCG@10, others | new items' share of the top 10 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {g['borrowed_ids']} | {g['scale']} | {g.get('text_weight', 0.0)} "
            f"| {g['ndcg10']:.4f} | {cell(g['ndcg10_new'])} "
            f"| {g['ndcg10_others']:.4f} | {g['new_share10']:.4f} |"
            for g in grid
        ]
    (args.out / "new_items.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
