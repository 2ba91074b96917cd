"""``promptrec recommend``: lists for some users (with explanations) or a JSONL export for all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from promptrec.cli.common import (
    CatalogOpt,
    DataOpt,
    DbOpt,
    EfSearchOpt,
    EncoderOpt,
    EncodingOpt,
    EventsOpt,
    IndexOpt,
    MilvusUriOpt,
    TemplateOpt,
    UnknownOpt,
    echo,
    index_config,
    load_data,
    setup,
)
from promptrec.errors import ConfigError, DataError


def recommend(
    data: DataOpt = None,
    catalog: CatalogOpt = None,
    events: EventsOpt = None,
    db: DbOpt = None,
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="A user id (repeatable).")
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="Every user in the log (JSONL export).")
    ] = False,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Items per list.")] = 10,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write JSONL, one line per user: {user_id, items, scores}, best first.",
        ),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            help="auto (best on the data's validation split), mean-of-items, "
            "multi-interest, sectioned, recent, profile, query, itemknn or popularity.",
        ),
    ] = "auto",
    model: Annotated[
        Path | None,
        typer.Option("--model", help="A model directory from `promptrec train` (else zero-shot)."),
    ] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="A live query.")] = None,
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries",
            help="With --all-users: a CSV of user_id,query; those users' lists answer their "
            "query (with their history), the others are plain.",
        ),
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Only these categories (repeatable).")
    ] = None,
    price_min: Annotated[float | None, typer.Option("--price-min")] = None,
    price_max: Annotated[float | None, typer.Option("--price-max")] = None,
    allow: Annotated[list[str] | None, typer.Option("--allow", help="Only these item ids.")] = None,
    deny: Annotated[list[str] | None, typer.Option("--deny", help="Never these item ids.")] = None,
    keep_seen: Annotated[
        bool, typer.Option("--keep-seen", help="Allow items the user already has (repeats).")
    ] = False,
    explain: Annotated[bool, typer.Option("--explain/--no-explain")] = True,
    encoder: EncoderOpt = "default",
    item_template: TemplateOpt = None,
    index: IndexOpt = "auto",
    ef_search: EfSearchOpt = None,
    milvus_uri: MilvusUriOpt = None,
    unknown_items: UnknownOpt = "drop",
    encoding: EncodingOpt = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --all-users: rank the users on a Ray cluster ('local' starts one here; "
            "'auto' or an address joins one; pip install \"promptrec[ray]\"). A language "
            "model's folder must exist at the same path on every node.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Recommend items for users; `--all-users -k 20 --output preds.jsonl` exports everyone."""
    from promptrec.recommender import Recommender
    from promptrec.retrieval.filters import Filters

    setup(verbose)
    if not all_users and not user:
        raise ConfigError("say whom to recommend for: --user ID (repeatable) or --all-users")
    if all_users and output is None:
        raise ConfigError("--all-users needs --output FILE.jsonl")
    if all_users and (query or category or price_min or price_max or allow or deny or keep_seen):
        raise ConfigError("--all-users exports plain lists: drop --query and the filters")
    if ray_address is not None and not all_users:
        raise ConfigError("--ray-address ranks --all-users on Ray: add --all-users")
    if queries is not None and not all_users:
        raise ConfigError("--queries gives the queries of an --all-users export: add --all-users")
    live = read_queries(queries) if queries is not None else None
    filters = Filters(
        categories=category, price_min=price_min, price_max=price_max, allow=allow, deny=deny
    )
    searched = index_config(index, ef_search, milvus_uri)
    dataset = load_data(data, catalog, events, db, unknown_items=unknown_items, encoding=encoding)
    if model is not None:
        from promptrec.train.load import load_model

        rec = Recommender(scorer=load_model(model), index=searched).fit(dataset, progress=True)
    else:
        rec = Recommender(
            strategy, encoder=encoder, item_template=item_template, index=searched
        ).fit(dataset, progress=True)
    if rec.selection:
        chosen = ", ".join(f"{n} {v:.4f}" for n, v in rec.selection.items())
        typer.echo(f"strategy auto: validation NDCG@10 {chosen} -> {rec.strategy}", err=True)
    if all_users:
        assert output is not None
        n = _export(rec, dataset, k, output, ray_address, live)
        where = " on Ray" if ray_address is not None else ""
        echo(
            f"wrote {n} users to {output} (strategy {rec.strategy}, k={k}, seen items "
            f"excluded){where}"
        )
        if live is not None:
            known = set(rec.user_ids)
            answered = sum(1 for u, q in live.items() if q and u in known)
            strangers = sum(1 for u in live if u not in known)
            echo(
                f"{answered} lists answer a query from {queries}"
                + (f"; {strangers} of its users are not in the log" if strangers else "")
            )
        return
    results = rec.recommend(
        user or [], k, query=query, filters=filters, exclude_seen=not keep_seen, explain=explain
    )
    if output is not None:
        with output.open("w") as fh:
            for r in results:
                fh.write(json.dumps(_line(dataset, r)) + "\n")
        echo(f"wrote {len(results)} users to {output}")
        return
    for r in results:
        echo(f"user {r.user_id} ({r.history_length} past interactions, strategy {r.strategy})")
        if r.prompt is not None:
            echo(f"  prompt: {r.prompt.text}")
            if r.prompt.n_dropped:
                echo(f"  ({r.prompt.n_dropped} oldest entries dropped to fit the token budget)")
        for rank, item in enumerate(r.items, 1):
            echo(f"  {rank:2d}. {item.title}  [{item.item_id}]  score {item.score:.3f}")
            if item.explanation is not None:
                echo(f"      why: {item.explanation.to_text()}")


def _line(dataset, r) -> dict:  # type: ignore[no-untyped-def]
    return _row(dataset, r.user_id, r.item_ids, r.scores)


def _row(dataset, user_id: str, items: list[str], scores: list[float]) -> dict:  # type: ignore[no-untyped-def]
    return {
        "user_id": dataset.export_id(user_id, "user_id"),
        "items": [dataset.export_id(i) for i in items],
        "scores": [round(s, 6) for s in scores],
    }


def read_queries(path: Path) -> dict[str, str]:
    """``user_id -> query`` from a CSV with those two columns (a blank query: a plain list).

    Raises:
        DataError: a missing file or column, a user twice, or text that cannot be a query
            (naming the file, line and column).
    """
    import pandas as pd

    from promptrec.data.limits import MAX_QUERY_LENGTH, text_problem

    if not path.is_file():
        raise DataError("no such file", file=str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"not a readable CSV ({exc})", file=str(path)) from exc
    missing = [c for c in ("user_id", "query") if c not in frame.columns]
    if missing:
        raise DataError(
            f"no column {missing[0]!r}", file=str(path), expected="a header user_id,query"
        )
    out: dict[str, str] = {}
    for line, (user, text) in enumerate(zip(frame["user_id"], frame["query"], strict=True), 2):
        if not user.strip():
            raise DataError("an empty user id", file=str(path), row=line, column="user_id")
        if user in out:
            raise DataError(
                f"user {user!r} appears twice", file=str(path), row=line, column="user_id"
            )
        problem = text_problem(text, MAX_QUERY_LENGTH)
        if problem:
            raise DataError(problem, file=str(path), row=line, column="query")
        out[user] = text.strip()
    return out


EXPORT_CHUNK = 8192  # users ranked, then written, at a time


def _every_list(rec, k: int, queries: dict[str, str]):  # type: ignore[no-untyped-def]
    """``(user_id, item ids, scores)`` of every user of the fitted log (seen items excluded),
    ranked a chunk of users at a time; a user in ``queries`` answers that live query."""
    from tqdm.auto import tqdm

    users = rec.user_ids
    with tqdm(total=len(users), desc="users", unit="user") as bar:
        for start in range(0, len(users), EXPORT_CHUNK):
            chunk = [
                rec.history(u).with_query(queries.get(u))
                for u in users[start : start + EXPORT_CHUNK]
            ]
            for r in rec.recommend(chunk, k):
                yield r.user_id, r.item_ids, r.scores
            bar.update(len(chunk))


def _export(  # type: ignore[no-untyped-def]
    rec, dataset, k: int, output: Path, ray_address: str | None = None, queries=None
) -> int:
    if ray_address is not None:
        from promptrec.ray_batch import recommend_on_ray

        lists = recommend_on_ray(rec, k, address=ray_address, queries=queries)
    else:
        lists = _every_list(rec, k, queries or {})
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    n = 0
    with tmp.open("w") as fh:
        for user_id, items, scores in lists:
            fh.write(json.dumps(_row(dataset, user_id, items, scores)) + "\n")
            n += 1
    tmp.replace(output)  # never leave a half-written export behind
    return n
