"""The feedback loop, closed: events posted to the service, a warm-start retraining from the
store's log into the registry (``promptrec train --db STORE --registry DIR --warm-start``, what
cron runs), the service's swap, and the next list served by the new version."""

from __future__ import annotations

import json
import time

from promptrec.cli.main import main
from promptrec.service.config import ArmSpec
from promptrec.service.registry import ModelRegistry
from promptrec.train.folder import read_model_config

AUTH = {"X-API-Key": "test-key"}
SMALL = {
    "dim": 32,
    "layers": 1,
    "max_len": 20,
    "epochs": 2,
    "batch_size": 64,
    "warmup_steps": 5,
    "validation_users": 300,
    "query_share": 0.0,
    # the loop is what is tested here, not the choice of the scoring settings
    "cooccurrence_weight": 0,
    "borrowed_ids": 0,
    "new_item_scale": 1,
    "new_item_text_weight": 0,
}


def _train(*args: str) -> None:
    try:
        main(["train", *args])
    except SystemExit as exc:
        assert exc.code in (0, None)


def test_posted_events_a_warm_retrain_and_the_swap(store, make_client, tmp_path) -> None:
    db, root = str(store.path), tmp_path / "models"
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    _train("--db", db, "--registry", str(root), "--config", str(config))
    registry = ModelRegistry(root)
    (v1,) = registry.versions()
    engine, client = make_client(store, [ArmSpec("main", "registry")], registry=root)
    with client:
        first = client.get("/recommend", params={"user_id": "loop-user"}).json()
        assert first["model_version"] == v1 and first["cold_start"]
        items = [r["item_id"] for r in first["items"][:4]]
        now = time.time()
        events = [
            {"user_id": "loop-user", "item_id": item, "event": "purchase", "timestamp": now + i}
            for i, item in enumerate(items)
        ]
        r = client.post("/events", json={"events": events}, headers=AUTH)
        assert r.status_code == 200 and r.json()["added"] == 4
        time.sleep(1.1)  # versions are named by the second
        _train("--db", db, "--registry", str(root), "--warm-start", "--epochs", "1")
        v1_, v2 = registry.versions()
        assert v1_ == v1 and registry.active == v2
        engine.poll_registry()
        after = client.get("/recommend", params={"user_id": "loop-user"}).json()
        assert after["model_version"] == v2 and not after["cold_start"]
        assert not set(items) & {r["item_id"] for r in after["items"]}  # history excluded
    engine.close()
    old, new = read_model_config(root / v1), read_model_config(root / v2)
    # the new version started from the served one, on the log with the posted events
    assert new["summary"]["warm_start"]["train_log"] == old["train_log"]
    assert new["train_log"] != old["train_log"]
    assert new["train_config"]["dim"] == 32 and new["train_config"]["epochs"] == 1
    trained_until = new["summary"].get("trained_until", old["summary"]["trained_until"])
    assert trained_until >= now + 3 or new["summary"]["warm_start"].get("kept")


def test_warm_start_errors_are_one_line(cli, tmp_path) -> None:
    code, _, err = cli(["train", "--output", str(tmp_path / "m"), "--warm-start"])
    assert code == 2 and "--warm-start starts from a registry" in err
    code, _, err = cli(
        ["train", "--registry", str(tmp_path / "empty"), "--warm-start", "--data", "x"]
    )
    assert code == 2 and "no model yet" in err and "Traceback" not in err
