"""Several engines on one store: what one writes, the others serve (histories at once, the
catalogue within a second, forgetting at once), in process on SQLite and PostgreSQL, and
through a real `promptrec serve --workers 2`."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from promptrec.service.config import ArmSpec, EngineConfig
from promptrec.service.engine import Engine
from promptrec.service.process import LiveServer, clients_per_worker
from promptrec.store import Event, Store

AUTH = {"X-API-Key": "test-key"}


@pytest.fixture(params=["sqlite", "postgres"])
def pair(request, beauty_slice, tmp_path):
    """Two engines serving one store through two connections, as two workers do."""
    target = (
        str(tmp_path / "shared.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_store_url")
    )
    with Store(target) as s:
        s.ingest(beauty_slice, source="slice")
    stores = [Store(target), Store(target)]
    config = EngineConfig(arms=[ArmSpec("main", "mean-of-items")], follow_seconds=3600)
    engines = [
        Engine(stores[0], config),
        Engine(stores[1], config.model_copy(update={"claim_service": False})),
    ]
    yield engines
    for engine, store in zip(engines, stores, strict=True):
        engine.close()
        store.close()


def _served(engine: Engine, user: str, item: str) -> float | None:
    """The score ``engine`` gives ``item`` for ``user`` (None when it is not served)."""
    got = engine.recommend(user, k=1, filters=_only(item)).recommendation.items
    return got[0].score if got else None


def _only(item: str):
    from promptrec.retrieval.filters import Filters

    return Filters(allow=[item])


def test_what_one_engine_changes_in_the_catalogue_the_other_serves(pair) -> None:
    a, b = pair
    user = a.histories.users(1)[0]
    a.upsert_item("new-polish", {"title": "Red nail polish, glossy", "category": "Nails"})
    assert _served(b, user, "new-polish") is None
    assert b.follow_catalogue() == 1
    assert _served(b, user, "new-polish") == pytest.approx(_served(a, user, "new-polish"))
    assert a.follow_catalogue() == 0  # its own change: served already, not encoded again

    gone = str(a.snapshot.data.item_ids[7])
    assert b.delete_item(gone)
    assert a.follow_catalogue() == 1
    assert a.item(gone) is None and _served(a, user, gone) is None

    # both change one item: each serves the store's last version once it has followed
    a.upsert_item("new-polish", {"title": "Blue nail polish"})
    b.upsert_item("new-polish", {"title": "Green nail polish"})
    a.follow_catalogue(), b.follow_catalogue()
    assert a.item("new-polish")["title"] == b.item("new-polish")["title"] == "Green nail polish"
    assert _served(a, user, "new-polish") == pytest.approx(_served(b, user, "new-polish"))
    assert a.catalogue_version == b.catalogue_version == a.state.catalogue_version()


def test_histories_and_forgetting_are_shared_at_once(pair) -> None:
    a, b = pair
    user = a.histories.users(1)[0]
    before = len(b.histories.history(user, b.snapshot.data, time.time()))
    served = a.recommend(user, k=5)
    clicked = served.recommendation.item_ids[0]
    event = Event(user, clicked, time.time(), "click", None, None)
    added = asyncio.run(b.add_events([event], request_ids=[served.request_id]))
    assert added.attributed == 1  # b found the list a served (a's batch was written first)
    history = a.histories.history(user, a.snapshot.data, time.time())
    assert len(history) == before + 1  # a reads b's write: no follow needed
    assert clicked not in a.recommend(user, k=20).recommendation.item_ids
    assert b.forget_user(user) is not None
    assert len(a.histories.history(user, a.snapshot.data, time.time())) == 0
    assert not a.histories.knows(user)


def test_a_new_worker_reads_changes_pruned_before_it_followed(pair) -> None:
    a, b = pair
    a.upsert_item("x1", {"title": "Nail file"})
    a.upsert_item("x2", {"title": "Hair clip"})
    a.state.prune(changes_before=time.time() + 1)  # b slept past the log's retention
    b.upsert_item("x3", {"title": "Lip balm"})  # and the log goes on
    a.follow_catalogue()
    b.follow_catalogue()  # b cannot tell what it missed: it reads the catalogue again
    assert all(b.item(i) is not None for i in ("x1", "x2", "x3"))
    assert a.item("x3") is not None


# ---------------------------------------------------------------------- a real server
def _pids(url: str, want: int, seconds: float = 60.0) -> set[int]:
    """Worker pids that answered /health, from fresh connections, until ``want`` were seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while len(seen) < want and time.monotonic() < deadline:
        seen.add(httpx.get(f"{url}/health", timeout=10).json()["worker"])
    return seen


def test_serve_with_two_workers(slice_files, tmp_path) -> None:
    catalog, events = slice_files
    server = LiveServer(
        ["--db", str(tmp_path / "w.db"), "--catalog", str(catalog), "--events", str(events)]
        + ["--workers", "2"],
        tmp_path / "serve.log",
    ).start()
    try:
        url = server.url
        assert len(_pids(url, 2)) == 2
        user = httpx.get(f"{url}/users", params={"limit": 1}, headers=AUTH).json()["users"][0]

        # a new item is served by every worker within a second of its PUT
        clients = clients_per_worker(url, 2)
        assert len(clients) == 2
        put = time.monotonic()
        r = httpx.put(f"{url}/items/new-polish", json={"title": "Red nail polish"}, headers=AUTH)
        assert r.status_code == 200
        serving: dict[int, float] = {}
        while len(serving) < 2 and time.monotonic() - put < 5:
            for pid, client in clients.items():
                if pid not in serving and client.get("/items/new-polish").status_code == 200:
                    serving[pid] = time.monotonic() - put
            time.sleep(0.02)
        assert len(serving) == 2 and max(serving.values()) < 1.0, serving
        for client in clients.values():
            client.close()

        # an event acknowledged by one worker is in the next history any worker reads
        item = httpx.get(f"{url}/recommend", params={"user_id": user}).json()["items"][0]
        body = {"events": [{"user_id": user, "item_id": item["item_id"], "event": "click"}]}
        assert httpx.post(f"{url}/events", json=body, headers=AUTH).status_code == 200
        for _ in range(6):
            with httpx.Client() as fresh:
                lst = fresh.get(f"{url}/recommend", params={"user_id": user, "k": 20}).json()
                assert item["item_id"] not in [i["item_id"] for i in lst["items"]]

        # a worker that dies is replaced; the others answer meanwhile
        victim = next(iter(_pids(url, 1)))
        os.kill(victim, signal.SIGKILL)
        assert victim not in _pids(url, 2, seconds=120)
    finally:
        server.stop()
    assert server.proc.returncode == 0 or server.proc.returncode == -signal.SIGTERM
