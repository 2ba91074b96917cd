"""The quality table of the README: zero-shot strategies, built-in baselines, fine-tuned
variants and the peer numbers of ``shared/BASELINES.md``, on every sequential shared data set.

Protocol: ``shared/EVALUATION.md`` (chronological leave-one-out, full ranking, history items
excluded). Each fine-tuned variant is trained on the log without the test targets; its early
stopping uses the validation targets (each user's second-to-last interaction); the test targets
are scored once, at the end. Model choice reads the validation column only.

Usage::

    python benchmarks/quality.py                       # both data sets, every variant
    python benchmarks/quality.py --data amazon-beauty --variants default,bce
    python benchmarks/quality.py --data movielens-100k --variants default --seed 1  # another run

Writes ``results/quality.json`` and ``results/quality.md``. Zero-shot rows are read from
``results/<data>.json`` (written by ``benchmarks/zero_shot.sh``) when present.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from promptrec import load_dataset
from promptrec.data.split import leave_last_out
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = {"movielens-100k": "movielens-100k", "amazon-beauty": "amazon-beauty"}
# name -> settings over the TrainConfig defaults
VARIANTS: dict[str, dict] = {
    # fast mode: softmax (InfoNCE over the catalogue), cosine, hybrid items, refit on the whole
    # log for the best epoch count
    # (trained on queries: half the positions also trained with a query through a query
    # tower, promptrec.train.queries.QueryBank)
    "default": {},
    "no-queries": {"query_share": 0.0},  # the defaults before queries were one
    "queries-no-refit": {"refit": False},
    # the variants below were measured before queries were a default: query_share 0 keeps
    # them as measured
    "no-refit": {"refit": False, "query_share": 0.0},  # the early-stopped model, as it is
    # the model alone, without the item co-occurrence term the default adds (chosen on
    # validation)
    "no-cooccurrence": {"cooccurrence_weight": 0.0, "query_share": 0.0},
    # one change each from no-refit (measured so, before refit became the default)
    "bce": {"loss": "bce", "num_negatives": 1, "refit": False, "query_share": 0.0},
    "sampled-softmax": {"loss": "sampled-softmax", "refit": False, "query_share": 0.0},
    # what catalogues above sample_above items get: each step encodes its batch's items alone,
    # and the softmax is estimated over sampled negatives (logQ); forced here at 0 items
    "batch-items": {"sample_above": 0, "refit": False, "query_share": 0.0},
    # no id embeddings: items from text
    "text-only": {"use_ids": False, "refit": False, "query_share": 0.0},
    # full mode (the language model tuned with LoRA, reading prompts and item texts), each
    # prompt strategy: the article's question, whether prompt design matters once the model
    # learns
    "full": {"mode": "full"},  # the `recent` strategy
    "full-sectioned": {"mode": "full", "prompt_strategy": "sectioned"},
    "full-profile": {"mode": "full", "prompt_strategy": "profile"},
    "full-query": {"mode": "full", "prompt_strategy": "query"},
}
METRICS = ("NDCG@10", "Recall@10", "MRR@10")


def peers(dataset: str) -> list[dict]:
    """Rows of shared/BASELINES.md for this data set (read at run time, never copied)."""
    path = SHARED / "BASELINES.md"
    if not path.exists():
        return []
    key = {"movielens-100k": "movielens-100k", "amazon-beauty": "amazon-beauty"}[dataset]
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0] == key and re.match(r"^[0-9.]+$", cells[2]):
            rows.append(
                {
                    "name": f"RecBole {cells[1]}",
                    "Recall@10": float(cells[2]),
                    "NDCG@10": float(cells[3]),
                    "MRR@10": float(cells[4]),
                    "train time": cells[8],
                    **(
                        {"Coverage@10": float(cells[10])}
                        if len(cells) > 10 and re.match(r"^[0-9.]+$", cells[10])
                        else {}
                    ),
                }
            )
    return rows


def zero_shot(dataset: str, directory: Path) -> dict:
    """``{"zero_shot": rows}`` from ``benchmarks/zero_shot.sh``'s ``<data>.json`` (nothing when
    it is absent)."""
    path = directory / f"{dataset}.json"
    if not path.exists():
        return {}
    z = json.loads(path.read_text())
    shown = (*METRICS, "Coverage@10", "AvgPop@10")
    return {
        "zero_shot": {
            s: {
                "validation": z["splits"]["validation"]["results"][s]["NDCG@10"],
                **{m: r[m] for m in shown if m in r},
            }
            for s, r in z["splits"]["test"]["results"].items()
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the trainings' seed; other than 0, each result is kept as <variant>-seed<N> "
        "(the same settings, another run)",
    )
    parser.add_argument(
        "--target",
        choices=("test", "validation"),
        default="test",
        help="validation: train without the validation targets (early stopping on the "
        "interaction before them) and score the validation targets, to choose settings that "
        "early stopping cannot judge (refit) without touching test; results go to "
        "'selection' in quality.json",
    )
    parser.add_argument(
        "--zero-shot",
        default=str(ROOT / "results"),
        help="where benchmarks/zero_shot.sh wrote <data>.json",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="save each fine-tuned model in DIR/<data>-<variant>/ (to evaluate it again later)",
    )
    parser.add_argument(
        "--merge",
        nargs="*",
        default=None,
        help="only merge these quality.json files into --out (no training)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.merge is not None:
        merged: dict = {}
        for f in args.merge:
            for name, block in json.loads(Path(f).read_text()).items():
                merged.setdefault(name, {"variants": {}})
                merged[name]["variants"].update(block["variants"])
                merged[name].setdefault("selection", {}).update(block.get("selection", {}))
                merged[name]["peers"] = peers(name)  # read again from their sources
                merged[name].update(zero_shot(name, Path(args.zero_shot)))
        (out / "quality.json").write_text(json.dumps(merged, indent=2))
        (out / "quality.md").write_text(markdown(merged, out))
        return
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "quality.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.data.split(","):
        data = load_dataset(SHARED / "data" / DATASETS[name])
        split = leave_last_out(data)[args.target]
        block = results.setdefault(name, {"variants": {}})
        into = block["variants"] if args.target == "test" else block.setdefault("selection", {})
        block["peers"] = peers(name)
        block.update(zero_shot(name, Path(args.zero_shot)))
        for variant in args.variants.split(","):
            cfg = TrainConfig(**VARIANTS[variant], seed=args.seed)
            t0 = time.perf_counter()
            scorer = Trainer(cfg).fit(split.fit)
            seconds = time.perf_counter() - t0
            key = f"{variant}-seed{args.seed}" if args.seed else variant
            if args.models:
                scorer.save(Path(args.models) / f"{name}-{key}", split.fit)
            res = evaluate_scorer(scorer, split, progress=False)
            summary = scorer.info["summary"]
            alone = None
            scoring = getattr(scorer, "scoring", None)
            if scoring is not None and scoring.cooccurrence_weight > 0:  # the term off
                weight = scorer.scoring.cooccurrence_weight
                scorer.scoring.cooccurrence_weight = 0.0
                alone = evaluate_scorer(scorer, split, progress=False).metrics
                scorer.scoring.cooccurrence_weight = weight
            into[key] = {
                "config": {**VARIANTS[variant], **({"seed": args.seed} if args.seed else {})},
                "validation": summary["validation_ndcg10"],
                "best_epoch": summary["best_epoch"],
                "cooccurrence": {k: summary.get(f"cooccurrence_{k}") for k in ("weight", "decay")},
                "validation_with_cooccurrence": summary.get("validation_ndcg10_with_cooccurrence"),
                "cooccurrence_grid": scorer.info.get("cooccurrence_choice", {}).get("grid"),
                "new_items": {
                    k: summary[k]
                    for k in ("borrowed_ids", "new_item_scale", "new_item_text_weight")
                    if k in summary
                },
                "model_alone": None
                if alone is None
                else {m: round(v, 6) for m, v in alone.items()},
                # full mode: every epoch's loss, validation NDCG@10 and seconds (epoch 0: untuned)
                "epochs": scorer.info["validation"] if cfg.mode == "full" else None,
                "train_seconds": round(seconds, 1),
                **{m: round(v, 6) for m, v in res.metrics.items()},
            }
            print(name, args.target, key, into[key], flush=True)
            results_path.write_text(json.dumps(results, indent=2))
    (out / "quality.md").write_text(markdown(results, out))


def _cell(row: dict, metric: str, digits: int) -> str:
    value = row.get(metric)
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict, out: Path) -> str:
    lines = []
    for name, block in results.items():
        lines += [
            f"### {name}",
            "",
            "| model | validation NDCG@10 | NDCG@10 | Recall@10 | MRR@10 | Coverage@10 | "
            "AvgPop@10 | train time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for v, r in sorted(block["variants"].items(), key=lambda kv: -kv[1]["validation"]):
            mix = r.get("cooccurrence") or {}
            term = (
                f", co-occurrence {mix['weight']} (decay {mix['decay']})"
                if mix.get("weight")
                else ""
            )
            new = r.get("new_items") or {}
            if new:
                term += (
                    f", new items: ids from {new['borrowed_ids']} neighbours, "
                    f"x{new['new_item_scale']}"
                )
                if new.get("new_item_text_weight"):
                    term += f", text match x{new['new_item_text_weight']}"
            if r.get("note"):
                term += f"; {r['note']}"
            lines.append(
                f"| promptrec fine-tuned: {v} (best epoch {r['best_epoch']}{term}) | "
                f"{r['validation']:.4f} | {r['NDCG@10']:.4f} | {r['Recall@10']:.4f} | "
                f"{r['MRR@10']:.4f} | {_cell(r, 'Coverage@10', 3)} | {_cell(r, 'AvgPop@10', 1)} "
                f"| {r['train_seconds'] / 60:.1f} min |"
            )
            if r.get("model_alone"):
                a = r["model_alone"]
                lines.append(
                    f"| the same model alone (co-occurrence off) | - | {a['NDCG@10']:.4f} | "
                    f"{a['Recall@10']:.4f} | {a['MRR@10']:.4f} | {_cell(a, 'Coverage@10', 3)} | "
                    f"{_cell(a, 'AvgPop@10', 1)} | - |"
                )
        for s, r in sorted(block.get("zero_shot", {}).items(), key=lambda kv: -kv[1]["NDCG@10"]):
            lines.append(
                f"| promptrec zero-shot: {s} | {r['validation']:.4f} | {r['NDCG@10']:.4f} | "
                f"{r['Recall@10']:.4f} | {r['MRR@10']:.4f} | {_cell(r, 'Coverage@10', 3)} | "
                f"{_cell(r, 'AvgPop@10', 1)} | - |"
            )
        if block.get("selection"):
            lines.append(
                "| *chosen on validation: trained without the validation targets, scored on "
                "them* | | | | | | | |"
            )
            for v, r in block["selection"].items():
                note = f"; {r['note']}" if r.get("note") else ""
                lines.append(
                    f"| selection: {v} (best epoch {r['best_epoch']}{note}) | "
                    f"{r['NDCG@10']:.4f} | - | - | - | - | - | {r['train_seconds'] / 60:.1f} min |"
                )
        for p in block.get("peers", []):
            lines.append(
                f"| {p['name']} (shared/BASELINES.md) | - | {p['NDCG@10']:.4f} | "
                f"{p['Recall@10']:.4f} | {p['MRR@10']:.4f} | {_cell(p, 'Coverage@10', 3)} | "
                f"{_cell(p, 'AvgPop@10', 1)} | {p['train time']} |"
            )
        lines.append("")
        lines += curve(name, block, out)
    return "\n".join(lines)


def curve(name: str, block: dict, out: Path) -> list[str]:
    """The default's co-occurrence grid at its chosen decay, on the validation sample: how
    NDCG@10 and Coverage@10 move with the weight (a table, and a plot beside quality.md)."""
    grid = (block["variants"].get("default") or {}).get("cooccurrence_grid")
    if not grid:
        return []
    decay = block["variants"]["default"]["cooccurrence"]["decay"]
    points = sorted(
        (g for g in grid if g["decay"] == decay or g["weight"] == 0), key=lambda g: g["weight"]
    )
    lines = [
        f"Co-occurrence weight of the default on {name} (recency decay {decay}; early-stopped "
        "model, validation sample):",
        "",
        "| weight | validation NDCG@10 | validation Coverage@10 |",
        "| --- | --- | --- |",
        *(f"| {g['weight']} | {g['ndcg10']:.4f} | {g['coverage10']:.3f} |" for g in points),
        "",
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([g["coverage10"] for g in points], [g["ndcg10"] for g in points], "o-")
    for g in points:
        ax.annotate(f"{g['weight']}", (g["coverage10"], g["ndcg10"]), fontsize=8)
    ax.set_xlabel("Coverage@10 (validation sample)")
    ax.set_ylabel("NDCG@10 (validation)")
    ax.set_title(f"{name}: co-occurrence weight, decay {decay}")
    fig.tight_layout()
    fig.savefig(out / f"cooccurrence-{name}.png", dpi=110)
    plt.close(fig)
    return lines


if __name__ == "__main__":
    main()
