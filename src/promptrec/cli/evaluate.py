"""``promptrec evaluate``: the shared/EVALUATION.md protocol for any list of strategies."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from promptrec.cli.common import (
    CatalogOpt,
    DataOpt,
    DbOpt,
    EncoderOpt,
    EncodingOpt,
    EventsOpt,
    TemplateOpt,
    UnknownOpt,
    echo,
    load_data,
    setup,
)
from promptrec.errors import ConfigError


def evaluate(
    data: DataOpt = None,
    catalog: CatalogOpt = None,
    events: EventsOpt = None,
    db: DbOpt = None,
    strategies: Annotated[
        str,
        typer.Option(
            "--strategies",
            "-s",
            help="Comma-separated: popularity, itemknn, mean-of-items, multi-interest, "
            "sectioned, recent, profile, query (default: all).",
        ),
    ] = "",
    splits: Annotated[
        str, typer.Option("--splits", help="validation, test, or both (comma-separated).")
    ] = "validation,test",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the results as JSON.")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Write the results as a Markdown table.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write plots (PNG) and an HTML page into this folder."),
    ] = None,
    validation_users: Annotated[
        int,
        typer.Option(
            "--validation-users",
            help="Score a seeded sample of at most this many validation users (0: all). "
            "Validation only chooses settings; the test split always scores every user.",
        ),
    ] = 5000,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="A model directory from `promptrec train --holdout-test` (repeatable); "
            "scored on the test split.",
        ),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="User prompt budget in tokens.")
    ] = None,
    keep_seen: Annotated[
        bool, typer.Option("--keep-seen", help="Do not exclude history items from the ranking.")
    ] = False,
    queries: Annotated[
        str | None,
        typer.Option(
            "--queries",
            help="'category' or 'category-path': the personalized product search protocol. "
            "Each target comes with a query made from its own deepest category (or its whole "
            "category path); reports BM25, query-only, "
            "history-only and promptrec with query and history (its weights chosen on "
            "validation), and each --model with and without the query.",
        ),
    ] = None,
    encoder: EncoderOpt = "default",
    item_template: TemplateOpt = None,
    unknown_items: UnknownOpt = "drop",
    encoding: EncodingOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Chronological leave-one-out, full ranking: Recall/NDCG/MRR@10,20 and coverage@10."""
    from promptrec.evaluation.evaluator import DEFAULT_STRATEGIES
    from promptrec.evaluation.evaluator import evaluate as run_evaluation
    from promptrec.evaluation.report import markdown_report, markdown_table, write_report

    setup(verbose)
    names = [s.strip() for s in strategies.split(",") if s.strip()] or list(DEFAULT_STRATEGIES)
    split_names = [s.strip() for s in splits.split(",") if s.strip()]
    for s in split_names:
        if s not in ("validation", "test"):
            raise ConfigError(f"--splits: unknown split '{s}' (use validation, test)")
    if queries is not None:
        from promptrec.evaluation.queries import PROTOCOLS

        if queries not in PROTOCOLS:
            raise ConfigError(
                f"--queries: unknown protocol '{queries}' (use {', '.join(PROTOCOLS)})"
            )
        if strategies or keep_seen or splits != "validation,test":
            raise ConfigError(
                f"--queries {queries} runs its own methods on both splits, history excluded: "
                "leave out --strategies, --splits and --keep-seen"
            )
    dataset = load_data(data, catalog, events, db, unknown_items=unknown_items, encoding=encoding)
    models = _load_models(model or [], dataset)
    t0 = time.perf_counter()
    if queries is not None:
        from promptrec.evaluation.queries import evaluate_queries

        result = evaluate_queries(
            dataset,
            encoder=encoder,
            item_template=item_template,
            validation_users=validation_users or None,
            seed=seed,
            models=models,
            protocol=queries,
        )
    else:
        result = run_evaluation(
            dataset,
            names,
            splits=split_names,  # type: ignore[arg-type]
            encoder=encoder,
            item_template=item_template,
            max_tokens=max_tokens,
            validation_users=validation_users or None,
            exclude_seen=not keep_seen,
            seed=seed,
            models=models,
        )
    result.settings["wall_seconds"] = round(time.perf_counter() - t0, 1)
    for split in split_names:
        echo(f"\n{dataset.name} / {split} ({result.n_users[split]} users)")
        echo(markdown_table(result, split))
    echo(f"\nwall time {result.settings['wall_seconds']:.0f}s")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result.to_dict(), indent=2))
        echo(f"wrote {output}")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(markdown_report(result))
        echo(f"wrote {markdown}")
    if report is not None:
        page = write_report(result, report)
        echo(f"wrote {page}")


def _load_models(paths: list[Path], dataset) -> dict:  # type: ignore[no-untyped-def]
    """Load trained models, refusing any that was trained on this data's test targets."""
    from promptrec.data.split import leave_last_out
    from promptrec.train.folder import log_fingerprint
    from promptrec.train.load import load_model

    if not paths:
        return {}
    full = log_fingerprint(dataset)
    honest = log_fingerprint(leave_last_out(dataset)["test"].fit)
    models = {}
    for path in paths:
        scorer = load_model(path)
        seen = scorer.info.get("train_log")
        if seen == full:
            raise ConfigError(
                f"{path} was trained on this whole log, test targets included: train it with "
                "`promptrec train --holdout-test` to evaluate it here"
            )
        if seen != honest:
            typer.echo(
                f"warning: {path} was trained on another log than this data minus its test "
                "targets; its numbers are only as honest as that log",
                err=True,
            )
        models[f"trained:{path.name}"] = scorer
    return models
