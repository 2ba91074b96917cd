"""The real server process: acknowledged events survive kill -9, a retried idempotency key is
stored once, and model swaps (by API and by the registry pointer, as cron retraining does) drop
no request under load."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from promptrec.cli.main import main
from promptrec.service.process import LiveServer
from promptrec.service.registry import ModelRegistry
from promptrec.store import Store

AUTH = {"X-API-Key": "test-key"}


def test_acknowledged_events_survive_kill_9(slice_files, beauty_slice, tmp_path) -> None:
    catalog, events = slice_files
    db = tmp_path / "crash.db"
    log = tmp_path / "server.log"
    server = LiveServer(
        ["--db", str(db), "--catalog", str(catalog), "--events", str(events)], log
    ).start()
    items = list(beauty_slice.item_ids[:50])
    acked: list[tuple[str, dict]] = []
    unanswered: list[tuple[str, dict]] = []

    def write() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for n in range(100_000):
                event = {
                    "user_id": f"crash-{n % 7}",
                    "item_id": str(items[n % len(items)]),
                    "event": "view",
                    "timestamp": 1.6e9 + n,
                }
                key = f"key-{n}"
                try:
                    r = client.post(
                        "/events",
                        json={"events": [event]},
                        headers={**AUTH, "Idempotency-Key": key},
                    )
                except httpx.TransportError:
                    unanswered.append((key, event))
                    return
                assert r.status_code == 200, r.text
                acked.append((key, event))

    writer = threading.Thread(target=write)
    writer.start()
    while len(acked) < 60:
        time.sleep(0.01)
    server.kill()
    writer.join(timeout=30)
    assert unanswered, "the writer should have been cut off by the kill"

    server = LiveServer(["--db", str(db)], log).start()  # the same store, no re-ingest
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            # clients retry what got no answer, and (by mistake) some acknowledged requests
            for key, event in unanswered + acked[-5:]:
                r = client.post(
                    "/events", json={"events": [event]}, headers={**AUTH, "Idempotency-Key": key}
                )
                assert r.status_code == 200, r.text
            for key, _ in acked[-5:]:
                again = client.post(
                    "/events",
                    json={"events": [acked[-1][1]]},
                    headers={**AUTH, "Idempotency-Key": key},
                ).json()
                assert again["replayed"] and again["added"] in (0, 1)
            # the restarted server serves the recovered history
            body = client.get("/recommend", params={"user_id": "crash-0"}).json()
            assert not body["cold_start"]
    finally:
        server.stop()
    with Store(db) as store:
        stored = store.dataset().events
    crash = stored[stored["user_id"].str.startswith("crash-")]
    keys = list(zip(crash["user_id"], crash["item_id"], crash["timestamp"], strict=True))
    assert len(keys) == len(set(keys)), "an event was stored twice"
    expected = {(e["user_id"], e["item_id"], e["timestamp"]) for _, e in acked + unanswered}
    assert set(keys) == expected


@pytest.fixture(scope="module")
def registry(slice_files, tmp_path_factory):
    """Two model versions trained by `promptrec train --registry` (small settings)."""
    catalog, events = slice_files
    root = tmp_path_factory.mktemp("models")
    config = root.parent / "small.json"
    config.write_text(
        json.dumps(
            {
                "dim": 32,
                "layers": 1,
                "max_len": 20,
                "epochs": 2,
                "batch_size": 64,
                "warmup_steps": 5,
                "validation_users": 300,
                # what these tests check (versions, swaps) needs no choice of scoring settings
                "refit": False,
                "cooccurrence_weight": 0,
                "borrowed_ids": 0,
                "new_item_scale": 1,
                "new_item_text_weight": 0,
            }
        )
    )
    for seed in (1, 2):
        args = [
            "train",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--registry",
            str(root / "models"),
            "--config",
            str(config),
            "--seed",
            str(seed),
        ]
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None)
        time.sleep(1.1)  # versions are named by the second
    return ModelRegistry(root / "models")


def test_train_registry_activate_and_rollback(registry, store, make_client) -> None:
    from promptrec.service.config import ArmSpec

    v1, v2 = registry.versions()
    assert registry.active == v2  # the newest training activated itself
    engine, client = make_client(store, [ArmSpec("main", "registry")], registry=registry.root)
    assert client.get("/recommend", params={"user_id": "x"}).json()["model_version"] == v2
    assert client.get("/model").json()["registry"]["versions"] == [v1, v2]
    r = client.post("/admin/models/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["registry"]["active"] == v1
    assert registry.active == v1
    assert client.get("/recommend", params={"user_id": "x"}).json()["model_version"] == v1
    r = client.post("/admin/models/activate", json={"version": v2}, headers=AUTH)
    assert r.json()["arms"][0]["model_version"] == v2 and registry.active == v2
    bad = client.post("/admin/models/activate", json={"version": "v9"}, headers=AUTH)
    assert bad.status_code == 409 and "no model version 'v9'" in bad.json()["detail"]
    assert registry.active == v2
    engine.close()


def test_a_version_that_fails_to_load_is_reported_not_served(registry, store, make_client) -> None:
    from promptrec.service.config import ArmSpec

    v1, v2 = registry.versions()
    registry.activate(v2)
    engine, client = make_client(store, [ArmSpec("main", "registry")], registry=registry.root)
    broken = registry.root / "99991231-235959"  # what a cron run that wrote garbage leaves
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"format_version": 99}))
    try:
        registry.activate(broken.name)
        engine.poll_registry()
        info = client.get("/model").json()["registry"]
        assert info["active"] == v2 and info["pointer"] == broken.name
        assert info["load_error"]["version"] == broken.name
        assert "format 99" in info["load_error"]["error"]
        assert client.get("/recommend", params={"user_id": "x"}).json()["model_version"] == v2
        # a catalogue change rebuilds with the version served, not the broken pointer
        r = client.put("/items/fresh-1", json={"title": "Fresh rose hand cream"}, headers=AUTH)
        assert r.status_code == 200
        assert client.get("/recommend", params={"user_id": "x"}).json()["model_version"] == v2
        registry.activate(v1)  # the next cron run fixes it
        engine.poll_registry()
        info = client.get("/model").json()["registry"]
        assert info["active"] == v1 and info["load_error"] is None
    finally:
        shutil.rmtree(broken)
        registry.activate(v2)
        engine.close()


def test_hot_swap_under_load_drops_no_request(registry, slice_files, tmp_path) -> None:
    catalog, events = slice_files
    v1, v2 = registry.versions()
    registry.activate(v1)
    server = LiveServer(
        [
            "--db",
            str(tmp_path / "swap.db"),
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--models",
            str(registry.root),
        ],
        tmp_path / "server.log",
    ).start()
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                r = client.get("/recommend", params={"user_id": f"u{n}", "q": "cream"})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["model_version"])

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        r = httpx.post(
            f"{server.url}/admin/models/activate", json={"version": v2}, headers=AUTH, timeout=60
        )
        assert r.status_code == 200
        time.sleep(1.0)
        registry.activate(v1)  # what a cron retraining does: the service polls the pointer
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and versions[-1] != v1:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    assert statuses and set(statuses) == {200}
    assert versions[0] == v1 and v2 in versions and versions[-1] == v1
