"""The command line on a real data slice: the outside-evaluator export, ingest, evaluate,
and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def files(beauty_slice, tmp_path_factory, write_shop) -> tuple[Path, Path]:
    """The slice as an outside evaluator would hand it over: catalog.jsonl + plain events.csv."""
    return write_shop(beauty_slice, tmp_path_factory.mktemp("slice"))


def test_all_users_export(files, beauty_slice, tmp_path, cli) -> None:
    catalog, events = files
    out = tmp_path / "preds.jsonl"
    code, stdout, err = cli(
        [
            "recommend",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--all-users",
            "-k",
            "20",
            "--output",
            str(out),
        ],
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == beauty_slice.events["user_id"].nunique()
    seen = beauty_slice.events.groupby("user_id")["item_id"].apply(set)
    catalog_ids = {int(i) for i in beauty_slice.item_ids}
    for line in lines:
        assert set(line) == {"user_id", "items", "scores"}
        assert isinstance(line["user_id"], int) and all(isinstance(i, int) for i in line["items"])
        assert len(line["items"]) == 20 == len(set(line["items"]))
        assert set(line["items"]) <= catalog_ids
        assert not {str(i) for i in line["items"]} & seen[str(line["user_id"])]
        assert line["scores"] == sorted(line["scores"], reverse=True)
    assert "strategy auto" in err  # the choice is made on validation and reported


def test_ingest_then_recommend_from_the_store(files, tmp_path, cli) -> None:
    catalog, events = files
    db = tmp_path / "store.db"
    args = ["ingest", "--catalog", str(catalog), "--events", str(events), "--db", str(db)]
    code, out, err = cli(args)
    assert code == 0, err
    code, out2, _ = cli(args)  # idempotent
    assert code == 0 and "events_added=0" in out2
    user = json.loads(events.read_text().splitlines()[1].split(",")[0])
    code, out, err = cli(
        [
            "recommend",
            "--db",
            str(db),
            "--user",
            str(user),
            "-k",
            "3",
            "--strategy",
            "mean-of-items",
            "--query",
            "nail polish",
        ],
    )
    assert code == 0, err
    assert out.count("why: similar to") == 3


def test_evaluate_writes_json_markdown_and_report(files, tmp_path, cli) -> None:
    catalog, events = files
    report = tmp_path / "report"
    code, out, err = cli(
        [
            "evaluate",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "-s",
            "popularity,itemknn,mean-of-items,recent",
            "--splits",
            "test",
            "--output",
            str(tmp_path / "r.json"),
            "--markdown",
            str(tmp_path / "r.md"),
            "--report",
            str(report),
        ],
    )
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    test = result["splits"]["test"]
    assert test["users"] == 300
    assert set(test["results"]) == {"popularity", "itemknn", "mean-of-items", "recent"}
    for r in test["results"].values():
        assert 0 <= r["NDCG@10"] <= r["Recall@10"] <= r["Recall@20"] <= 1
        assert sum(b["users"] for b in r["by_history"].values()) == 300
    assert result["protocol"]["history_items_excluded"] is True
    assert "| mean-of-items |" in (tmp_path / "r.md").read_text()
    for name in ("index.html", "ndcg_test.png", "ndcg_by_history_test.png"):
        assert (report / name).stat().st_size > 1000
    assert "ndcg_by_history_test.png" in (report / "index.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend", "--all-users", "-k", "5", "-o", "x.jsonl"], "give the data once"),
        (["evaluate", "--data", "/no/such/folder"], "/no/such/folder"),
        (["recommend", "--data", "DATA", "--user", "1", "--strategy", "magic"], "unknown strategy"),
        (["evaluate", "--data", "DATA", "--splits", "train"], "unknown split"),
        (["evaluate", "--data", "DATA", "--queries", "title"], "unknown protocol"),
        (["evaluate", "--data", "DATA", "--queries", "category", "-s", "bm25"], "--strategies"),
        (["recommend", "--data", "DATA", "--all-users"], "--output"),
        (["recommend", "--data", "DATA", "--user", "1", "--ray-address", "local"], "--all-users"),
        (
            ["recommend", "--data", "DATA", "--user", "1", "--price-min", "9", "--price-max", "1"],
            "price_min",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message, files, cli) -> None:
    catalog, _ = files
    args = [str(catalog.parent) if a == "DATA" else a for a in args]
    code, out, err = cli(args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_refuses_one_milvus_lite_file_for_several_workers(tmp_path, cli) -> None:
    args = ["serve", "--db", str(tmp_path / "s.db"), "--workers", "2", "--index", "milvus"]
    code, _, err = cli([*args, "--milvus-uri", str(tmp_path / "items.db")])
    assert code == 2 and "--workers 1" in err and "http://host:19530" in err
    assert "Traceback" not in err and not (tmp_path / "s.db").exists()


def test_bad_events_file_names_file_line_and_column(files, tmp_path, cli) -> None:
    catalog, events = files
    bad = tmp_path / "events.csv"
    lines = events.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",not-a-time"
    bad.write_text("\n".join(lines) + "\n")
    code, _, err = cli(["evaluate", "--catalog", str(catalog), "--events", str(bad)])
    assert code == 2
    assert str(bad) in err and "line 6" in err and "timestamp" in err
    assert "Traceback" not in err


def test_usage_errors_exit_2_with_a_message_and_no_traceback(cli) -> None:
    code, _, err = cli(["recommend", "--users", "1"])
    assert code == 2 and "No such option: --users" in err and "--user" in err
    code, _, err = cli(["train", "--epochs", "many"])
    assert code == 2 and "--epochs" in err
    code, out, err = cli([])  # no command: the help (typer prints it), as a usage error
    assert code == 2 and "Commands" in out + err
    assert "Traceback" not in err


def test_an_interrupted_command_exits_130(files, tmp_path, cli, monkeypatch) -> None:
    import promptrec.train.run

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(promptrec.train.run, "train_model", interrupted)
    catalog, events = files
    args = ["train", "--catalog", str(catalog), "--events", str(events)]
    code, _, err = cli([*args, "--output", str(tmp_path / "m")])
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_help_lists_the_commands(cli) -> None:
    code, out, _ = cli(["--help"])
    assert code == 0
    for command in ("ingest", "embed", "recommend", "evaluate", "demo"):
        assert command in out


def test_train_then_recommend_with_the_model(files, tmp_path, cli) -> None:
    catalog, events = files
    model = tmp_path / "model"
    config = tmp_path / "small.json"
    config.write_text(
        json.dumps({"dim": 32, "layers": 1, "max_len": 20, "patience": 2, "validation_users": 300})
    )
    code, out, err = cli(
        [
            "train",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--output",
            str(model),
            "--config",
            str(config),
            "--epochs",
            "3",
        ],
    )
    assert code == 0, err
    assert "validation NDCG@10" in out and (model / "weights.safetensors").exists()
    preds = tmp_path / "preds.jsonl"
    code, out, err = cli(
        [
            "recommend",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--all-users",
            "-k",
            "20",
            "--output",
            str(preds),
            "--model",
            str(model),
        ],
    )
    assert code == 0, err
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 300 and all(len(line["items"]) == 20 for line in lines)
    assert "strategy trained" in out
    # evaluating this model on the same log would score targets it trained on: refused
    code, _, err = cli(
        [
            "evaluate",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--model",
            str(model),
            "-s",
            "popularity",
        ],
    )
    assert code == 2 and "holdout-test" in err


def test_train_rejects_bad_settings(files, tmp_path, cli) -> None:
    catalog, events = files
    code, _, err = cli(
        [
            "train",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--output",
            str(tmp_path / "m"),
            "--loss",
            "hinge",
        ],
    )
    assert code == 2 and "loss" in err and "Traceback" not in err


def test_all_users_export_with_queries(files, beauty_slice, tmp_path, cli) -> None:
    """`--queries Q.csv`: the users in it get lists that answer their query (with their
    history); the others get the plain lists; a bad file is one clear error."""
    catalog, events = files
    users = sorted(beauty_slice.events["user_id"].unique())[:3]
    queries = tmp_path / "queries.csv"
    queries.write_text(f"user_id,query\n{users[0]},nail polish\n{users[1]},\nghost,shampoo\n")

    def export(*extra: str) -> dict:
        out = tmp_path / f"preds{len(extra)}.jsonl"
        args = ["recommend", "--catalog", str(catalog), "--events", str(events), "--all-users"]
        code, stdout, err = cli(
            [*args, "-k", "10", "-o", str(out), "--strategy", "mean-of-items", *extra]
        )
        assert code == 0, err
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        return {str(line["user_id"]): line["items"] for line in lines} | {"_out": stdout}

    plain, asked = export(), export("--queries", str(queries))
    assert "1 lists answer a query" in asked["_out"] and "1 of its users are not" in asked["_out"]
    titles = beauty_slice.items.set_index(beauty_slice.items["item_id"].astype(int))["title"]
    nails = [
        sum("nail" in str(titles[i]).lower() or "polish" in str(titles[i]).lower() for i in lists)
        for lists in (plain[users[0]], asked[users[0]])
    ]
    assert nails[1] >= 5 and nails[1] > nails[0]  # the query leads the list
    assert asked[users[1]] == plain[users[1]] and asked[users[2]] == plain[users[2]]
    assert set(asked) == set(plain)  # every user of the log, and nobody else
    for text, expected in (
        ("user,query\nu,x\n", "no column 'user_id'"),
        (f"user_id,query\n{users[0]},a\n{users[0]},b\n", "line 3, column 'user_id': user"),
    ):
        queries.write_text(text)
        code, _, err = cli(
            ["recommend", "--catalog", str(catalog), "--events", str(events), "--all-users"]
            + ["-o", str(tmp_path / "x.jsonl"), "--queries", str(queries)]
        )
        assert code == 2 and expected in err and "Traceback" not in err, err


def test_evaluate_with_queries_scores_search_baselines_and_a_model(files, tmp_path, cli) -> None:
    """The personalized product search protocol: each target's category as the query; BM25,
    query-only, history-only and promptrec with both, and a trained model with and without."""
    catalog, events = files
    model = tmp_path / "model"
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"dim": 32, "layers": 1, "max_len": 20, "refit": False}))
    data = ["--catalog", str(catalog), "--events", str(events)]
    code, _, err = cli(
        ["train", *data, "--output", str(model), "--config", str(config), "--epochs", "2"]
        + ["--holdout-test"]
    )
    assert code == 0, err
    code, out, err = cli(
        ["evaluate", *data, "--queries", "category", "--model", str(model)]
        + ["--output", str(tmp_path / "q.json"), "--markdown", str(tmp_path / "q.md")]
    )
    assert code == 0, err
    result = json.loads((tmp_path / "q.json").read_text())
    zero_shot = {"bm25", "query-only", "history-only", "mean-of-items+query"}
    assert set(result["splits"]["validation"]["results"]) == zero_shot
    trained = {"trained:model", "trained:model+query"}
    assert set(result["splits"]["test"]["results"]) == zero_shot | trained
    chosen = result["settings"]["chosen"]
    assert set(chosen) == {"mean-of-items+query", "trained:model"}
    assert "Each target comes with a query" in (tmp_path / "q.md").read_text()
    assert "| bm25 |" in out and "| trained:model+query |" in out
    # the whole category path as the query: the same methods, other queries
    code, out, err = cli(
        ["evaluate", *data, "--queries", "category-path", "--model", str(model)]
        + ["--output", str(tmp_path / "path.json")]
    )
    assert code == 0, err
    path = json.loads((tmp_path / "path.json").read_text())
    assert set(path["splits"]["test"]["results"]) == zero_shot | trained
    assert "category path" in path["settings"]["queries"]
    assert path["settings"]["queries"] != result["settings"]["queries"]
