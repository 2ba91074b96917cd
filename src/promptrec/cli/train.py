"""``promptrec train``: fine-tune on the behaviour log and write a model directory."""

from __future__ import annotations

import json
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


def train(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The model directory to write.")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            help="Write a new version into this model registry and activate it (a running "
            "`promptrec serve --models DIR` swaps to it); instead of --output.",
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Warm start: begin from this fast-mode model (its settings and weights; new "
            "items and users get their rows) and train on the whole given log, validated on "
            "the users with events newer than the model.",
        ),
    ] = None,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start",
            help="With --registry: warm start from the registry's active version (as --init-from).",
        ),
    ] = False,
    data: DataOpt = None,
    catalog: CatalogOpt = None,
    events: EventsOpt = None,
    db: DbOpt = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A JSON file of training settings (see TrainConfig)."),
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="fast (default) or full.")] = None,
    loss: Annotated[
        str | None, typer.Option("--loss", help="softmax (default), sampled-softmax or bce.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="At most this many.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    holdout_test: Annotated[
        bool,
        typer.Option(
            "--holdout-test",
            help="Leave each user's last interaction out of training, so that "
            "`promptrec evaluate --model` can score it honestly.",
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume/--restart", help="Resume from the output's checkpoint.")
    ] = True,
    encoder: EncoderOpt = "default",
    item_template: TemplateOpt = None,
    unknown_items: UnknownOpt = "drop",
    encoding: EncodingOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a two-tower model on the log (validation: each user's last interaction)."""
    from promptrec.data.split import leave_last_out
    from promptrec.train import TrainConfig
    from promptrec.train.load import load_model
    from promptrec.train.new_items import describe
    from promptrec.train.run import train_model
    from promptrec.train.warm import starting_model, warm_config

    setup(verbose)
    settings: dict = {}
    if config is not None:
        try:
            settings = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{config}: {exc}") from exc
    for key, value in (
        ("mode", mode),
        ("loss", loss),
        ("epochs", epochs),
        ("seed", seed),
        ("encoder", None if encoder == "default" else encoder),
        ("item_template", item_template),
    ):
        if value is not None:
            settings[key] = value
    if (output is None) == (registry is None):
        raise ConfigError("give one of --output DIR or --registry DIR")
    if warm_start and (registry is None or init_from is not None):
        raise ConfigError("--warm-start starts from a registry's active model: give --registry DIR")
    models = None
    if registry is not None:
        from promptrec.service.registry import ModelRegistry

        models = ModelRegistry(registry)
        if warm_start:
            init_from = models.path()
        output = models.new_version()
    assert output is not None
    old = None
    if init_from is not None:
        old = starting_model(load_model(init_from))
        cfg = warm_config(old.config_, settings)
        echo(f"warm start from {init_from}")
    else:
        cfg = TrainConfig(**settings)  # a ValidationError is reported as a user error
    dataset = load_data(data, catalog, events, db, unknown_items=unknown_items, encoding=encoding)
    if holdout_test:
        dataset = leave_last_out(dataset)["test"].fit
    scorer = train_model(dataset, cfg, output, resume=resume, init_from=old)
    if models is not None:
        models.activate(output.name)
        echo(f"activated version {output.name} in {registry}")
    s = scorer.info.get("summary", {})
    mixed = ""
    if s.get("cooccurrence_weight"):
        mixed = (
            f"; item co-occurrence added at weight {s['cooccurrence_weight']} (recency decay "
            f"{s['cooccurrence_decay']})"
        )
        if "validation_ndcg10_with_cooccurrence" in s:
            mixed += f": {s['validation_ndcg10_with_cooccurrence']}"
    echo(
        f"wrote {output}: best epoch {s.get('best_epoch')}, validation NDCG@10 "
        f"{s.get('validation_ndcg10')}{mixed}, {s.get('train_seconds')}s"
    )
    if "borrowed_ids" in s:
        echo(
            "new items (no id embedding): "
            f"{describe(s['borrowed_ids'], s.get('new_item_text_weight') or 0)}, scores "
            f"x{s['new_item_scale']} (config new_item_scale above 1 shows them more)"
        )
