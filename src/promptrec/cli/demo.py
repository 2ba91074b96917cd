"""``promptrec demo``: the whole path on MovieLens 100k from the recbole wheel, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptrec.cli.common import echo, setup


def demo(
    users: Annotated[
        int, typer.Option("--users", help="Evaluate on a seeded sample of this many users.")
    ] = 300,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write plots and an HTML page here.")
    ] = None,
    train_minutes: Annotated[
        float,
        typer.Option(
            "--train-minutes",
            min=0,
            help="Fine-tune in fast mode for at most this many minutes and add the model to "
            "the table (0: skip).",
        ),
    ] = 3.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Catalogue, prompts, recommendations with explanations, a short fine-tuning, and an
    evaluation table of them all."""
    from promptrec.data.loaders import find_demo_data, load_dataset
    from promptrec.data.split import leave_last_out
    from promptrec.evaluation.evaluator import EvaluationResult, evaluate_scorer
    from promptrec.evaluation.report import markdown_table, write_report
    from promptrec.prompts.users import STRATEGIES
    from promptrec.recommender import Recommender
    from promptrec.scorers import TextSpace, make_scorer

    setup(verbose)
    path = find_demo_data()
    data = load_dataset(path)
    echo(f"== data: {data} from {path}")
    space = TextSpace().fit(data, progress=True)
    echo(f"== item prompts (template {space.template_name}, encoder {space.encoder.name}):")
    for text in space.texts[:3]:
        echo(f"   {text}")

    user = data.user_ids[0]
    history = data.histories([user])[0]
    echo(f"\n== user {user}: {len(history)} interactions; the prompt strategies:")
    for name in STRATEGIES:
        scorer = make_scorer(name, space, max_tokens=96).fit(data)
        p = scorer.prompts([history])[0]
        echo(f" [{name}] ({p.n_tokens} tokens, {p.n_dropped} oldest dropped) {p.text}")

    # the scorer brings the text space encoded above: explanations quote its texts
    rec = Recommender(scorer=make_scorer("mean-of-items", space)).fit(data)
    [r] = rec.recommend([user], n=5, explain=True)
    echo(f"\n== top 5 for user {user} (mean-of-items, seen items excluded):")
    for rank, item in enumerate(r.items, 1):
        echo(f"  {rank}. {item.title} (score {item.score:.3f})")
        echo(f"     why: {item.explanation.to_text() if item.explanation else '-'}")
    [q] = rec.recommend([user], n=5, query="space adventure", explain=True)
    echo("\n== with the live query 'space adventure':")
    for rank, item in enumerate(q.items, 1):
        why = item.explanation.to_text() if item.explanation else "-"
        echo(f"  {rank}. {item.title} (score {item.score:.3f}); why: {why}")

    echo(f"\n== evaluation (shared/EVALUATION.md protocol, test split, {users} sampled users):")
    split = leave_last_out(data)["test"].sample(users, seed=0)
    names = ["popularity", "itemknn", "mean-of-items", "sectioned", "profile"]
    results = {}
    for name in names:
        scorer = make_scorer(name, space, max_tokens=128)
        results[name] = evaluate_scorer(scorer, split, progress=False)
    if train_minutes > 0:
        from promptrec.train import TrainConfig, Trainer
        from promptrec.train.new_items import describe

        echo(
            f"\n== fine-tuning in fast mode on the log before the test targets (the `train` "
            f"defaults without refit; at most {train_minutes:g} minutes):"
        )
        config = TrainConfig(refit=False, max_minutes=train_minutes)
        trained = Trainer(config, space=space, progress=True).fit(split.fit)
        summary = trained.info.get("summary", {})
        new_items = describe(
            int(summary.get("borrowed_ids") or 0), summary.get("new_item_text_weight") or 0
        )
        echo(
            f"   best epoch {summary.get('best_epoch')}, validation NDCG@10 "
            f"{summary.get('validation_ndcg10')}; item co-occurrence added at weight "
            f"{summary.get('cooccurrence_weight')} (decay {summary.get('cooccurrence_decay')}): "
            f"{summary.get('validation_ndcg10_with_cooccurrence')}; new items: "
            f"{new_items}, scores x{summary.get('new_item_scale')}; "
            f"{summary.get('train_seconds')} s"
        )
        results["fine-tuned"] = evaluate_scorer(trained, split, progress=False)
    result = EvaluationResult(
        data.name,
        data.n_items,
        {"test": len(split.histories)},
        {"test": results},
        {"encoder": space.encoder.name, "validation_users": None, "sample_users": users},
    )
    echo(markdown_table(result, "test"))
    if report is not None:
        echo(f"wrote {write_report(result, report)}")
