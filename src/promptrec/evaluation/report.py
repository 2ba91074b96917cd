"""Evaluation output: JSON, a Markdown table, and a small HTML page with plots."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from promptrec.evaluation.evaluator import HISTORY_BUCKETS, EvaluationResult, bucket_label

TABLE_METRICS = (
    "NDCG@10",
    "Recall@10",
    "MRR@10",
    "NDCG@20",
    "Recall@20",
    "MRR@20",
    "Coverage@10",
    "AvgPop@10",
)


def _cell(metric: str, value: float | None) -> str:
    """A table cell: shares to four places, the average popularity (a count) to one; ``-``
    for a metric an older result file lacks."""
    if value is None:
        return "-"
    return f"{value:.1f}" if metric.startswith("AvgPop") else f"{value:.4f}"


def markdown_table(result: EvaluationResult | dict[str, Any], split: str = "test") -> str:
    """One row per strategy, best NDCG@10 first."""
    d = result.to_dict() if isinstance(result, EvaluationResult) else result
    block = d["splits"][split]
    rows = sorted(block["results"].items(), key=lambda kv: -kv[1]["NDCG@10"])
    head = "| strategy | " + " | ".join(TABLE_METRICS) + " | time |"
    sep = "|" + " --- |" * (len(TABLE_METRICS) + 2)
    lines = [head, sep]
    for name, r in rows:
        cells = " | ".join(_cell(m, r.get(m)) for m in TABLE_METRICS)
        lines.append(f"| {name} | {cells} | {r['seconds']:.0f}s |")
    return "\n".join(lines)


def markdown_report(result: EvaluationResult) -> str:
    d = result.to_dict()
    parts = [f"# {d['dataset']}: evaluation", ""]
    excluded = "excluded" if d["protocol"]["history_items_excluded"] else "kept"
    parts.append(
        f"Protocol: {d['protocol']['split']}, full ranking over {d['n_items']} items, "
        f"history items {excluded}."
    )
    settings = d["settings"]
    if "queries" in settings:  # the personalized product search protocol
        skipped = settings["skipped (target without a category)"]
        parts.append(
            f"Each target comes with a query: {settings['queries']}; users skipped (a target "
            f"without a category): {skipped['validation']} validation, {skipped['test']} test. "
            f"Weights of query and history, chosen on validation: {settings['chosen']}."
        )
    for split, block in d["splits"].items():
        parts += ["", f"## {split} ({block['users']} users)", "", markdown_table(d, split)]
    return "\n".join(parts) + "\n"


def _plot_strategies(d: dict[str, Any], split: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = d["splits"][split]["results"]
    names = sorted(results, key=lambda n: results[n]["NDCG@10"])
    values = [results[n]["NDCG@10"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    colors = ["#888888" if n in ("popularity", "itemknn") else "#2b7bba" for n in names]
    ax.barh(names, values, color=colors)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    ax.set_xlabel("NDCG@10")
    ax.set_title(f"{d['dataset']} ({split}): NDCG@10 per strategy (grey: ID-based baselines)")
    ax.set_xlim(0, max(values) * 1.25 if values and max(values) > 0 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_history(d: dict[str, Any], split: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = d["splits"][split]["results"]
    names = list(results)
    buckets = [bucket_label(lo, hi) for lo, hi in HISTORY_BUCKETS]
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(buckets))
    for i, name in enumerate(names):
        vals = [results[name]["by_history"][b]["NDCG@10"] for b in buckets]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    users = [results[names[0]]["by_history"][b]["users"] for b in buckets] if names else []
    ax.set_xticks(x, [f"{b}\n({u} users)" for b, u in zip(buckets, users, strict=False)])
    ax.set_xlabel("interactions per user")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"{d['dataset']} ({split}): NDCG@10 by history length")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: EvaluationResult, directory: str | Path) -> Path:
    """Write ``results.json``, ``results.md``, two PNG plots per split and ``index.html``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    d = result.to_dict()
    (out / "results.json").write_text(json.dumps(d, indent=2))
    md = markdown_report(result)
    (out / "results.md").write_text(md)
    sections = []
    for split in d["splits"]:
        bar, hist = f"ndcg_{split}.png", f"ndcg_by_history_{split}.png"
        _plot_strategies(d, split, out / bar)
        _plot_history(d, split, out / hist)
        sections.append(
            f"<h2>{html.escape(split)} ({d['splits'][split]['users']} users)</h2>"
            f"{_html_table(d, split)}"
            f'<p><img src="{bar}" alt="NDCG@10 per strategy"></p>'
            f'<p><img src="{hist}" alt="NDCG@10 by history length"></p>'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>promptrec evaluation: {html.escape(d['dataset'])}</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child{text-align:left}</style></head><body>"
        f"<h1>promptrec evaluation: {html.escape(d['dataset'])}</h1>"
        f"<p>{html.escape(d['protocol']['split'])}; full ranking over {d['n_items']} items; "
        f"history items {'excluded' if d['protocol']['history_items_excluded'] else 'kept'}; "
        f"encoder {html.escape(str(d['settings'].get('encoder')))}.</p>"
        + "".join(sections)
        + "<p><a href='results.json'>results.json</a> · <a href='results.md'>results.md</a></p>"
        "</body></html>"
    )
    (out / "index.html").write_text(page)
    return out / "index.html"


def _html_table(d: dict[str, Any], split: str) -> str:
    results = d["splits"][split]["results"]
    rows = sorted(results.items(), key=lambda kv: -kv[1]["NDCG@10"])
    head = "".join(f"<th>{m}</th>" for m in TABLE_METRICS)
    body = "".join(
        f"<tr><td>{html.escape(n)}</td>"
        + "".join(f"<td>{_cell(m, r.get(m))}</td>" for m in TABLE_METRICS)
        + f"<td>{r['seconds']:.0f}s</td></tr>"
        for n, r in rows
    )
    return f"<table><tr><th>strategy</th>{head}<th>time</th></tr>{body}</table>"
