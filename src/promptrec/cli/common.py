"""Options and helpers shared by the commands."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from promptrec.data.dataset import Dataset
from promptrec.errors import ConfigError

log = logging.getLogger("promptrec")

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A data folder in a known format (MovieLens, Amazon items.jsonl + "
        "interactions.csv, RecBole atomic files) or a .inter file.",
    ),
]
CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", help="Catalogue file (JSONL, CSV or Parquet).")
]
EventsOpt = Annotated[
    Path | None, typer.Option("--events", help="Behaviour log (CSV, Parquet or JSONL).")
]
# a string, not a Path: a Path would turn postgresql://host/db into postgresql:/host/db
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="A promptrec store made by `promptrec ingest`: a SQLite file, or a "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL.",
    ),
]
UnknownOpt = Annotated[
    str,
    typer.Option(
        "--unknown-items",
        help="Events for items missing from the catalogue: 'drop' (with a warning) or 'error'.",
    ),
]
EncodingOpt = Annotated[
    str | None, typer.Option("--encoding", help="Text encoding of the input files (utf-8).")
]
EncoderOpt = Annotated[
    str,
    typer.Option(
        "--encoder",
        help="'default' (offline MiniLM), 'multilingual' (offline E5, Chinese and more), "
        "'openai:MODEL' (an OpenAI-compatible endpoint), or a sentence-transformers "
        "name or path.",
    ),
]
IndexOpt = Annotated[
    str,
    typer.Option(
        "--index",
        help="How lists are searched: 'exact', 'hnsw' (approximate, for large catalogues), "
        "'milvus' (a Milvus collection: give --milvus-uri), or 'auto' (exact up to 200,000 "
        "items, HNSW above).",
    ),
]
EfSearchOpt = Annotated[
    int | None,
    typer.Option(
        "--ef-search",
        min=1,
        help="HNSW beam width per query: higher finds more of the true top items, slower. "
        "Default: calibrated when the graph is built, the narrowest width that finds 95% of "
        "the exact top-10 for a sample of the shop's users.",
    ),
]


MilvusUriOpt = Annotated[
    str | None,
    typer.Option(
        "--milvus-uri",
        help="With --index milvus: a file for the embedded milvus-lite, or a server URI "
        "(http://host:19530). Needs pip install 'promptrec[milvus]'.",
    ),
]


def index_config(kind: str, ef_search: int | None, milvus_uri: str | None = None) -> Any:
    """The :class:`~promptrec.retrieval.index.IndexConfig` of the --index options."""
    from promptrec.retrieval.index import IndexConfig

    if milvus_uri is not None and kind != "milvus":
        raise ConfigError("--milvus-uri goes with --index milvus")
    return IndexConfig(kind=kind, ef_search=ef_search, milvus_uri=milvus_uri)  # type: ignore[arg-type]


TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--item-template",
        help="Item template: product, film, article, ad, generic, or a .j2 file "
        "(default: picked from the catalogue's fields).",
    ),
]


def load_data(
    data: Path | None,
    catalog: Path | None,
    events: Path | None,
    db: str | Path | None = None,
    *,
    unknown_items: str = "drop",
    encoding: str | None = None,
) -> Dataset:
    """The dataset from exactly one source: --data, --catalog + --events, or --db (a SQLite
    file, which must exist, or a postgresql:// URL)."""
    given = [x is not None for x in (data, catalog or events, db)]
    if sum(given) != 1:
        raise ConfigError("give the data once: --data DIR, or --catalog F --events F, or --db F")
    if unknown_items not in ("drop", "error"):
        raise ConfigError(f"--unknown-items must be 'drop' or 'error', not '{unknown_items}'")
    if db is not None:
        from promptrec.store import Store, is_postgres_url

        if not is_postgres_url(db) and not Path(db).exists():
            raise ConfigError(f"{db}: no such store; create it with `promptrec ingest`")
        with Store(db) as store:
            return store.dataset()
    from promptrec.data.loaders import load_dataset

    if data is not None:
        return load_dataset(data, unknown_items=unknown_items, encoding=encoding)
    if catalog is None or events is None:
        raise ConfigError("--catalog and --events go together")
    return load_dataset(
        catalog=catalog, events=events, unknown_items=unknown_items, encoding=encoding
    )


def setup(verbose: bool) -> None:
    """Logging to stderr; torch threads from PROMPTREC_NUM_THREADS when set."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "sentence_transformers", "transformers", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    threads = os.environ.get("PROMPTREC_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def echo(text: str = "") -> None:
    typer.echo(text)
