"""``promptrec ingest`` and ``promptrec embed``."""

from __future__ import annotations

import time
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

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs and tracebacks.")]


def ingest(
    data: DataOpt = None,
    catalog: CatalogOpt = None,
    events: EventsOpt = None,
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="The store to write: a SQLite file (made when missing) or a "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL.",
        ),
    ] = "promptrec.db",
    unknown_items: UnknownOpt = "drop",
    encoding: EncodingOpt = None,
    verbose: Verbose = False,
) -> None:
    """Validate a catalogue and a behaviour log and store them (idempotent; all or nothing)."""
    from promptrec.store import Store

    setup(verbose)
    dataset = load_data(data, catalog, events, unknown_items=unknown_items, encoding=encoding)
    source = str(data or f"{catalog} + {events}")
    with Store(db) as store:
        report = store.ingest(dataset, source=source)
        counts = store.counts()
    # the store's location, not --db: a URL's password is not printed
    echo(f"{store.location}: {report}")
    echo(f"{store.location} now holds " + ", ".join(f"{v} {k}" for k, v in counts.items()))


def embed(
    data: DataOpt = None,
    catalog: CatalogOpt = None,
    events: EventsOpt = None,
    db: DbOpt = None,
    encoder: EncoderOpt = "default",
    item_template: TemplateOpt = None,
    encoding: EncodingOpt = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Encode on a Ray cluster ('local' starts one here; 'auto' or an address "
            'joins one; pip install "promptrec[ray]"): each finished batch is cached as it '
            "comes back, so a rerun encodes only what is left.",
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Encode the catalogue's item texts into the on-disk cache (only new or changed texts)."""
    from promptrec.encoders import CachedEncoder, load_encoder, text_hash
    from promptrec.prompts.items import ItemPrompter
    from promptrec.scorers import TextSpace
    from promptrec.store import Store

    setup(verbose)
    dataset = load_data(data, catalog, events, db, encoding=encoding)
    t0 = time.perf_counter()
    remote = 0
    if ray_address is not None:
        from promptrec.ray_batch import encode_on_ray

        texts = ItemPrompter(item_template).texts(dataset.items)
        remote, _ = encode_on_ray(encoder, texts, address=ray_address)
    enc = load_encoder(encoder)
    space = TextSpace(enc, item_template).fit(dataset, progress=True)
    seconds = time.perf_counter() - t0
    hits = (enc.hits if isinstance(enc, CachedEncoder) else 0) - remote
    where = f" ({remote} on Ray)" if ray_address is not None else ""
    echo(
        f"{dataset.n_items} items, template {space.template_name}, encoder {enc.name}: "
        f"{dataset.n_items - hits} encoded{where}, {hits} from cache, {seconds:.1f}s"
    )
    if db is not None:
        with Store(db) as store:
            store.record_embeddings(
                enc.name, list(dataset.item_ids), [text_hash(t) for t in space.texts], enc.dim
            )
    echo(f"example item text: {space.texts[0]}")
