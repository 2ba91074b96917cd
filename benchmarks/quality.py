"""The quality table of the README: zero-shot strategies, built-in baselines, fine-tuned
variants and the peer numbers of ``shared/BASELINES.md``, on every sequential shared data set.

Protocol: ``shared/EVALUATION.md`` (chronological leave-one-out, full ranking, history items
excluded). Each fine-tuned variant is trained on the log without the test targets; its early
stopping uses the validation targets (each user's second-to-last interaction); the test targets
are scored once, at the end. Model choice reads the validation column only.

Usage::

    python benchmarks/quality.py                       # both data sets, every variant
    python benchmarks/quality.py --data amazon-beauty --variants default,bce

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
    "default": {},
    "no-refit": {"refit": False},  # the model that early stopping picked, as it is
    # one change each from no-refit (measured so, before refit became the default)
    "bce": {"loss": "bce", "num_negatives": 1, "refit": False},  # the baseline formulation
    "sampled-softmax": {"loss": "sampled-softmax", "refit": False},
    # what catalogues above sample_above items get: each step encodes its batch's items alone,
    # and the softmax is estimated over sampled negatives (logQ); forced here at 0 items
    "batch-items": {"sample_above": 0, "refit": False},
    "text-only": {"use_ids": False, "refit": False},  # no id embeddings: items from text
    # full mode: LoRA on the language model reading `recent` prompts (CPU: small data only)
    "full-lora": {
        "mode": "full",
        "epochs": 3,
        "batch_size": 32,
        "lr": 5e-4,
        "temperature": 0.05,
        "validation_users": 1000,
    },
    # full mode: prefix tuning (16 learned soft-prompt tokens; the language model frozen)
    "full-prefix": {
        "mode": "full",
        "peft_method": "prefix",
        "epochs": 3,
        "batch_size": 32,
        "lr": 5e-3,
        "temperature": 0.05,
        "validation_users": 1000,
    },
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
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "results"))
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
                for key in ("peers", "zero_shot"):
                    if key in block:
                        merged[name][key] = block[key]
        (out / "quality.json").write_text(json.dumps(merged, indent=2))
        (out / "quality.md").write_text(markdown(merged))
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
        zero = Path(args.zero_shot) / f"{name}.json"
        if zero.exists():
            z = json.loads(zero.read_text())
            block["zero_shot"] = {
                s: {
                    "validation": z["splits"]["validation"]["results"][s]["NDCG@10"],
                    **{m: r[m] for m in METRICS},
                }
                for s, r in z["splits"]["test"]["results"].items()
            }
        for variant in args.variants.split(","):
            cfg = TrainConfig(**VARIANTS[variant])
            t0 = time.perf_counter()
            if cfg.mode == "full":
                from promptrec.train.full import FullTrainer

                scorer = FullTrainer(cfg).fit(split.fit)
            else:
                scorer = Trainer(cfg).fit(split.fit)
            seconds = time.perf_counter() - t0
            res = evaluate_scorer(scorer, split, progress=False)
            summary = scorer.info["summary"]
            into[variant] = {
                "config": VARIANTS[variant],
                "validation": summary["validation_ndcg10"],
                "best_epoch": summary["best_epoch"],
                "train_seconds": round(seconds, 1),
                **{m: round(v, 6) for m, v in res.metrics.items()},
            }
            print(name, args.target, variant, into[variant], flush=True)
            results_path.write_text(json.dumps(results, indent=2))
    (out / "quality.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = []
    for name, block in results.items():
        lines += [
            f"### {name}",
            "",
            "| model | validation NDCG@10 | NDCG@10 | Recall@10 | MRR@10 | train time |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for v, r in sorted(block["variants"].items(), key=lambda kv: -kv[1]["validation"]):
            lines.append(
                f"| promptrec fine-tuned: {v} (best epoch {r['best_epoch']}) | "
                f"{r['validation']:.4f} | {r['NDCG@10']:.4f} | {r['Recall@10']:.4f} | "
                f"{r['MRR@10']:.4f} | {r['train_seconds'] / 60:.1f} min |"
            )
        for s, r in sorted(block.get("zero_shot", {}).items(), key=lambda kv: -kv[1]["NDCG@10"]):
            lines.append(
                f"| promptrec zero-shot: {s} | {r['validation']:.4f} | {r['NDCG@10']:.4f} | "
                f"{r['Recall@10']:.4f} | {r['MRR@10']:.4f} | - |"
            )
        if block.get("selection"):
            lines.append(
                "| *chosen on validation: trained without the validation targets, scored on "
                "them* | | | | | |"
            )
            for v, r in block["selection"].items():
                lines.append(
                    f"| selection: {v} (best epoch {r['best_epoch']}) | {r['NDCG@10']:.4f} | - | "
                    f"- | - | {r['train_seconds'] / 60:.1f} min |"
                )
        for p in block.get("peers", []):
            lines.append(
                f"| {p['name']} (shared/BASELINES.md) | - | {p['NDCG@10']:.4f} | "
                f"{p['Recall@10']:.4f} | {p['MRR@10']:.4f} | {p['train time']} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
