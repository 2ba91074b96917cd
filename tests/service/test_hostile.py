"""The service under hostile and malformed input, one test per case of the reliability issue:
poison items, out-of-range values, lost request ids, two services on one store, who may read
user data, body limits, counted errors, bounded state, offline docs, the dashboard's plots, and
snapshots that never change under a request."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from promptrec.errors import ConfigError
from promptrec.service.app import create_app
from promptrec.service.config import EngineConfig
from promptrec.service.engine import Engine
from promptrec.service.security import ApiKeys
from promptrec.store import Store

KEY = "test-key"
AUTH = {"X-API-Key": KEY}


def a_user(client) -> str:
    return client.get("/users", params={"limit": 1}, headers=AUTH).json()["users"][0]


def _items(store: Store, item_id: str) -> int:
    return store.db.scalar("SELECT COUNT(*) FROM items WHERE item_id = ?", (item_id,))


# ---------------------------------------------------------------------- 1. poison items
@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"title": "Long code", "stock": 10**22}, "stock", "64-bit"),
        ({"title": "Big", "price": 1e300}, "price", "beyond"),
        ({"title": "Deep", "tags": [[[["x"]]]]}, "tags", "nested deeper"),
        ({"title": "nul\x00here"}, "title", "NUL"),
        ({"title": "lone \ud800"}, "title", "lone surrogate"),
        ({"title": "Not a number", "price": math.nan}, "price", "not a finite number"),
    ],
)
def test_an_item_the_store_cannot_keep_is_refused_and_nothing_is_stored(
    client, store, body, field, problem
) -> None:
    # json.dumps escapes the surrogate as \ud800 and writes NaN: what a client could send
    r = client.put(
        "/items/poison",
        content=json.dumps(body),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"] and problem in r.json()["detail"]
    assert _items(store, "poison") == 0
    # the service goes on: the next item is stored and served
    ok = client.put("/items/fine", json={"title": "Rose shampoo", "stock": 2**63 - 1}, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert client.get("/items/fine").json()["stock"] == 2**63 - 1
    assert client.get("/health").json()["skipped_rows"] == {"items": 0, "events": 0}


def test_a_poison_row_already_stored_is_skipped_counted_and_repairable(
    beauty_slice, tmp_path, make_client
) -> None:
    with Store(tmp_path / "poisoned.db") as store:
        store.ingest(beauty_slice)
        with store.db.transaction() as db:  # what an older promptrec let through
            db.execute(
                "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?)",
                ("poison", json.dumps({"title": "Code", "stock": 10**22}), 1.0),
            )
        engine, client = make_client(store)  # starts: the row is skipped
        try:
            health = client.get("/health").json()
            assert health["status"] == "ok" and health["skipped_rows"]["items"] == 1
            assert health["items"] == beauty_slice.n_items
            assert 'promptrec_store_skipped_rows{table="items"} 1.0' in client.get("/metrics").text
            assert client.get("/items/poison").status_code == 404  # not served
            # PUT repairs it (the value as text), and it is served at once
            fixed = client.put(
                "/items/poison", json={"title": "Code", "stock": str(10**22)}, headers=AUTH
            )
            assert fixed.status_code == 200 and fixed.json()["created"] is False
            assert client.get("/items/poison").json()["stock"] == str(10**22)
            assert client.get("/health").json()["skipped_rows"]["items"] == 0
        finally:
            engine.close()


def test_deleting_a_poison_row_clears_it(beauty_slice, tmp_path, make_client) -> None:
    with Store(tmp_path / "poisoned.db") as store:
        store.ingest(beauty_slice)
        with store.db.transaction() as db:
            db.execute(
                "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?)",
                ("broken", "{not json", 1.0),
            )
        engine, client = make_client(store)
        try:
            assert client.get("/health").json()["skipped_rows"]["items"] == 1
            assert client.delete("/items/broken", headers=AUTH).status_code == 204
            assert _items(store, "broken") == 0
            assert client.get("/health").json()["skipped_rows"]["items"] == 0
        finally:
            engine.close()


def test_a_catalogue_change_that_cannot_be_served_is_not_committed(store, make_client) -> None:
    engine, client = make_client(store)
    try:
        existing = str(engine.snapshot.data.item_ids[0])
        encoder = engine.snapshot.arms["main"].recommender.scorer.space.encoder
        encode = encoder.encode

        def down(*args, **kwargs):
            raise RuntimeError("the encoder is down")

        encoder.encode = down  # encoding the new item fails
        assert client.put("/items/z", json={"title": "Zest"}, headers=AUTH).status_code == 500
        engine.catalogue.builder.edited = down  # any failure while the changed snapshot is built
        assert client.delete(f"/items/{existing}", headers=AUTH).status_code == 500
        assert _items(store, "z") == 0 and _items(store, existing) == 1
        assert client.get(f"/items/{existing}").status_code == 200
        del engine.catalogue.builder.edited
        encoder.encode = encode
        assert client.put("/items/z", json={"title": "Zest"}, headers=AUTH).status_code == 200
        assert client.get("/items/z").status_code == 200 and _items(store, "z") == 1
    finally:
        engine.close()


# ---------------------------------------------------------------------- 2. out-of-range values
@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"timestamp": "0001-01-01T00:00:00"}, "timestamp", "before 1970"),
        ({"timestamp": 1e300}, "timestamp", "in the future"),
        ({"timestamp": "9999-12-31T23:59:59"}, "timestamp", "in the future"),
        ({"timestamp": "far", "_future_days": 3}, "timestamp", "in the future"),
        ({"timestamp": -1}, "timestamp", "before 1970"),
        ({"event": "rating", "value": math.nan}, "value", "not a finite number"),
        ({"event": "rating", "value": math.inf}, "value", "not a finite number"),
        ({"event": "rating", "value": 1e300}, "value", "beyond"),
        ({"user_id": "lone \ud800"}, "user_id", "lone surrogate"),
        ({"user_id": "nul\x00"}, "user_id", "NUL"),
        ({"user_id": "   "}, "user_id", "empty id"),
        ({"query": "q\x00"}, "query", "NUL"),
        ({"request_id": "r\x00"}, "request_id", "NUL"),
    ],
)
def test_event_values_out_of_range_are_422_naming_the_field(
    client, store, change, field, problem
) -> None:
    user = a_user(client)
    item = client.get("/recommend", params={"user_id": user}).json()["items"][0]["item_id"]
    event = {"user_id": user, "item_id": item, "event": "view", **change}
    if event.pop("_future_days", None):
        event["timestamp"] = time.time() + 3 * 86400
    before = store.counts()["events"]
    r = client.post(
        "/events",
        content=json.dumps({"events": [event]}),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert f"events.0.{field}" in r.json()["detail"] and problem in r.json()["detail"]
    assert store.counts()["events"] == before


def test_plausible_times_are_stored_as_given(client, store) -> None:
    user = a_user(client)
    item = client.get("/recommend", params={"user_id": user}).json()["items"][0]["item_id"]
    events = [
        {"user_id": "t1", "item_id": item, "event": "view", "timestamp": "2020-01-01T00:00:00"},
        {"user_id": "t1", "item_id": item, "event": "cart", "timestamp": "2020-01-01T02:00+02:00"},
        {"user_id": "t1", "item_id": item, "event": "click", "timestamp": 0},
        {"user_id": "t1", "item_id": item, "event": "rating", "value": 4.5},
    ]
    r = client.post("/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200 and r.json()["added"] == 4
    stamps = store.db.read("SELECT timestamp, event FROM events WHERE user_id = 't1' ORDER BY id")
    assert stamps[0] == (1577836800.0, "view") and stamps[1] == (1577836800.0, "cart")
    assert stamps[2] == (0.0, "click") and abs(stamps[3][0] - time.time()) < 60


# ---------------------------------------------------------------------- 3. lost request ids
def test_feedback_quoting_an_unknown_request_id_is_stored_never_refused(client, store) -> None:
    user = a_user(client)
    served = client.get("/recommend", params={"user_id": user}).json()
    first, last = served["items"][0]["item_id"], served["items"][-1]["item_id"]
    other = client.get("/recommend", params={"user_id": "someone-else"}).json()
    events = [
        # a list lost in a crash: the item is on the user's latest list, so the fallback rule
        # attributes it there
        {"user_id": user, "item_id": first, "event": "click", "request_id": "lost-in-a-crash"},
        # another user's list is never this user's: stored, attributed by the fallback rule
        {"user_id": user, "item_id": last, "event": "purchase", "request_id": other["request_id"]},
        # no list at all has this item for this user: stored, unattributed
        {"user_id": "new-user", "item_id": first, "event": "cart", "request_id": "never-served"},
    ]
    r = client.post("/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == 3 and body["unknown_request_ids"] == 3 and body["attributed"] == 2
    linked = store.db.read("SELECT request_id, event FROM attributions ORDER BY event")
    assert linked == [(served["request_id"], "click"), (served["request_id"], "purchase")]


def test_forgetting_a_user_while_their_lists_are_being_written_forgets_those_too(
    store, make_client
) -> None:
    engine, client = make_client(store, flush_seconds=3600.0)
    try:
        user = a_user(client)
        served = client.get("/recommend", params={"user_id": user}).json()
        state = engine.state
        record = state.record_impressions

        def slow(batch):  # the batch left memory and waits for the store
            time.sleep(0.5)
            record(batch)

        state.record_impressions = slow
        flushing = threading.Thread(target=engine.flush)
        flushing.start()
        time.sleep(0.1)
        assert client.delete(f"/users/{user}", headers=AUTH).status_code == 200
        flushing.join()
        assert state.impression(served["request_id"]) is None
        assert state.impressions(user) == []
    finally:
        engine.close()


# ---------------------------------------------------------------------- 4. one service per store
def test_a_second_engine_on_the_same_store_is_refused(beauty_slice, tmp_path) -> None:
    path = tmp_path / "one.db"
    with Store(path) as store:
        store.ingest(beauty_slice)
        first = Engine(store, EngineConfig(owner="the first service"))
        try:
            with pytest.raises(ConfigError, match="already served by the first service"):
                Engine(store)  # the same store object
            with Store(path) as again, pytest.raises(ConfigError, match="already served"):
                Engine(again)  # another connection, as another process would have
        finally:
            first.close()
        Engine(store).close()  # free again once the first is closed


def test_a_second_engine_on_the_same_postgres_store_is_refused(
    beauty_slice, postgres_store_url
) -> None:
    with Store(postgres_store_url) as store:
        store.ingest(beauty_slice)
        first = Engine(store, EngineConfig(owner="the first service"))
        try:
            with Store(postgres_store_url) as again:
                with pytest.raises(ConfigError, match="already served by the first service"):
                    Engine(again)
        finally:
            first.close()
        with Store(postgres_store_url) as again:
            Engine(again).close()


# ---------------------------------------------------------------------- 5. who reads user data
def test_user_data_needs_a_key_unless_opened(store) -> None:
    engine = Engine(store)
    try:
        client = TestClient(create_app(engine, ApiKeys([KEY])))
        user = client.get("/users", params={"limit": 1}, headers=AUTH).json()["users"][0]
        for path, params in [
            ("/users", {}),
            (f"/users/{user}/history", {}),
            ("/recommend", {"user_id": user, "explain": True}),
        ]:
            assert client.get(path, params=params).status_code == 401, path
            assert client.get(path, params=params, headers={"X-API-Key": "no"}).status_code == 403
            assert client.get(path, params=params, headers=AUTH).status_code == 200
        assert client.get("/recommend", params={"user_id": user}).status_code == 200
        seen = {"user_id": user, "keep_seen": True}
        assert client.get("/recommend", params=seen).status_code == 401  # shows the history
        assert client.get("/recommend", params=seen, headers=AUTH).status_code == 200
        # a recent search steers the list, but only a key holder sees its text echoed
        client.post(
            "/events",
            json={"events": [{"user_id": user, "event": "search", "query": "argan oil"}]},
            headers=AUTH,
        )
        assert client.get("/recommend", params={"user_id": user}).json()["query"] is None
        mine = client.get("/recommend", params={"user_id": user}, headers=AUTH).json()
        assert mine["query"] == "argan oil"
        asked = client.get("/recommend", params={"user_id": user, "q": "soap"}).json()
        assert asked["query"] == "soap"
        assert client.get("/health").json()["user_data_needs_key"] is True

        open_client = TestClient(create_app(engine, ApiKeys([KEY], public_user_data=True)))
        assert open_client.get("/users").status_code == 200
        assert open_client.get(f"/users/{user}/history").status_code == 200
        assert open_client.get("/health").json()["user_data_needs_key"] is False
        spec = client.get("/openapi.json").json()
        assert "401" in spec["paths"]["/users"]["get"]["responses"]
        assert (
            "401"
            not in open_client.get("/openapi.json").json()["paths"]["/users"]["get"]["responses"]
        )
    finally:
        engine.close()


def test_ids_with_surrounding_spaces_are_refused_not_stripped(client, store) -> None:
    r = client.put("/items/%20x", json={"title": "Phantom"}, headers=AUTH)
    assert r.status_code == 422 and "spaces" in r.json()["detail"]
    body = {"events": [{"user_id": " u", "item_id": "x", "event": "view"}]}
    r = client.post("/events", json=body, headers=AUTH)
    assert r.status_code == 422 and "events.0.user_id" in r.json()["detail"]
    assert client.delete("/users/u%20", headers=AUTH).status_code == 422
    assert _items(store, " x") == 0


def test_a_nested_key_with_a_lone_surrogate_is_a_422_not_a_500(client, store) -> None:
    r = client.put(
        "/items/odd",
        content='{"title": "t", "attrs": {"\\ud800": 1}}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "lone surrogate" in r.json()["detail"]
    assert _items(store, "odd") == 0


# ---------------------------------------------------------------------- 6. operations
def test_a_chunked_body_over_the_limit_gets_413_and_is_counted(client, store) -> None:
    before = store.counts()["events"]

    def chunks():  # no Content-Length: the body is streamed, 2 MB in all
        for _ in range(32):
            yield b" " * 65536

    r = client.post(
        "/events", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["detail"]
    assert store.counts()["events"] == before
    text = client.get("/metrics").text
    assert 'promptrec_requests_total{method="POST",route="/events",status="413"} 1.0' in text


def test_a_client_that_leaves_mid_upload_is_not_a_server_error(client) -> None:
    import asyncio

    app = client.app
    sent: list[dict] = []
    messages = [
        {"type": "http.request", "body": b'{"events": [', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/events",
        "raw_path": b"/events",
        "query_string": b"",
        "headers": [(b"x-api-key", KEY.encode()), (b"content-type", b"application/json")],
        "app": app,
    }
    asyncio.run(app.middleware_stack(scope, receive, send))
    assert sent == []  # nobody to answer
    text = client.get("/metrics").text
    assert 'promptrec_requests_total{method="POST",route="/events",status="499"} 1.0' in text
    assert 'status="500"' not in text


def test_a_long_idempotency_key_is_refused(client, store) -> None:
    user = a_user(client)
    item = client.get("/recommend", params={"user_id": user}).json()["items"][0]["item_id"]
    body = {"events": [{"user_id": user, "item_id": item, "event": "view"}]}
    r = client.post("/events", json=body, headers={**AUTH, "Idempotency-Key": "k" * 8000})
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]
    r = client.post("/events", json={**body, "idempotency_key": "k" * 201}, headers=AUTH)
    assert r.status_code == 422 and "idempotency_key" in r.json()["detail"]
    assert store.counts()["events"] > 0 and store.db.scalar("SELECT COUNT(*) FROM idempotency") == 0


def test_server_errors_and_rejections_are_counted_by_route_and_status(
    store, make_client, caplog
) -> None:
    engine, client = make_client(store)
    try:

        def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        engine.recommend = broken
        r = client.get("/recommend", params={"user_id": "u"})
        assert r.status_code == 500 and r.json() == {
            "detail": "internal server error (logged by the service)"
        }
        assert "a bug" in caplog.text  # the traceback is in the log, not the answer
        client.post("/events", json={"events": []})
        client.get("/no/such/route")
        text = client.get("/metrics").text
        for route, method, status in [
            ("/recommend", "GET", 500),
            ("/events", "POST", 401),
            ("unmatched", "GET", 404),
        ]:
            line = (
                f'promptrec_requests_total{{method="{method}",route="{route}",status="{status}"}}'
            )
            assert f"{line} 1.0" in text, (line, text)
    finally:
        engine.close()


def test_retention_prunes_lists_and_keys_but_keeps_the_counts(store, make_client) -> None:
    engine, client = make_client(store, keep_served_seconds=3600.0, keep_idempotency_seconds=60.0)
    try:
        user = a_user(client)
        served = client.get("/recommend", params={"user_id": user}).json()
        item = served["items"][0]["item_id"]
        click = {"user_id": user, "item_id": item, "event": "click"}
        body = {"events": [{**click, "request_id": served["request_id"]}]}
        first = client.post("/events", json=body, headers={**AUTH, "Idempotency-Key": "once"})
        assert first.json()["attributed"] == 1
        for item_id in ("new", "newer"):
            added = client.put(f"/items/{item_id}", json={"title": "Nail file"}, headers=AUTH)
            assert added.status_code == 200
        counted = [r for r in client.get("/metrics").text.splitlines() if "online" in r]
        assert engine.prune(time.time() + 30) == {
            "impressions": 0,
            "attributions": 0,
            "idempotency": 0,
            "catalogue_changes": 0,
        }
        # the catalogue's change log is kept an hour (long enough for every worker to follow)
        # but for its newest change (a worker further behind sees what it missed)
        assert engine.prune(time.time() + 7200) == {
            "impressions": 1,
            "attributions": 1,
            "idempotency": 1,
            "catalogue_changes": 1,
        }
        assert engine.state.counts()["impressions"] == 0
        assert [r for r in client.get("/metrics").text.splitlines() if "online" in r] == counted
        assert 'promptrec_pruned_rows_total{table="impressions"} 1.0' in client.get("/metrics").text
        # the key is forgotten: a retry now is a new request (the event has no timestamp, so
        # it is stored again, at a new time)
        again = client.post("/events", json=body, headers={**AUTH, "Idempotency-Key": "once"})
        assert again.json()["replayed"] is False
    finally:
        engine.close()


def test_metrics_read_the_counts_not_the_stored_lists(store, make_client) -> None:
    engine, client = make_client(store)
    try:
        for n in range(5):
            client.get("/recommend", params={"user_id": f"user-{n}"})
        engine.flush()
        assert engine.state.counts()["impressions"] == 5
        before = client.get("/metrics").text
        assert 'promptrec_online_impressions{arm="main",model_version="zero-shot"' in before
        with store.db.transaction() as db:  # the lists go (as retention does): the counts stay
            assert db.execute("DELETE FROM impressions").rowcount == 5
        assert [r for r in client.get("/metrics").text.splitlines() if "online" in r] == [
            r for r in before.splitlines() if "online" in r
        ]
    finally:
        engine.close()


def test_a_scrape_counts_lists_not_yet_written_and_writes_nothing(store, make_client) -> None:
    engine, client = make_client(store, flush_seconds=3600.0)  # no batch written meanwhile
    try:
        for n in range(4):
            client.get("/recommend", params={"user_id": f"user-{n}"})
        text = client.get("/metrics").text
        assert 'promptrec_online_impressions{arm="main",model_version="zero-shot",' in text
        assert 'strategy="mean-of-items"} 4.0' in text
        online = client.get("/dashboard/online").json()["arms"]
        assert [r["impressions"] for r in online] == [4]
        assert engine.state.counts()["impressions"] == 0  # reads wrote nothing
        engine.flush()
        assert engine.state.counts()["impressions"] == 4
        assert 'strategy="mean-of-items"} 4.0' in client.get("/metrics").text  # not twice
    finally:
        engine.close()


def test_docs_work_without_a_cdn(client) -> None:
    html = client.get("/docs").text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in html
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    assert "cdn." not in html and "https://" not in html.replace("https://fastapi", "")


def test_dashboard_series_run_in_time_order(client) -> None:
    from promptrec.service.dashboard import PLOT_LOCK, ctr_figure, latency_figure, latency_series

    now = time.time()
    # /events first seen later than /recommend's first bucket, and answered out of order
    trace = [
        (now - 50, "/recommend", 0.004),
        (now - 5, "/events", 0.020),
        (now - 40, "/events", 0.010),
        (now - 45, "/recommend", 0.006),
        (now - 1, "/recommend", 0.002),
    ]
    series = latency_series(trace, 10.0)
    for starts, p50, p99 in series.values():
        assert starts == sorted(starts) and len(starts) == len(p50) == len(p99)
    assert series["/events"][1] == [10.0, 20.0]
    app = client.app
    engine, metrics = app.state.engine, app.state.metrics
    # served lists minutes apart, stored newest first; requests traced out of order
    from promptrec.service.state import Impression

    engine.state.record_impressions(
        [
            Impression(f"r{n}", "u", "main", "zero-shot", "mean-of-items", ("x",), now - 60 * n)
            for n in range(5)
        ]
    )
    for t, route, seconds in trace:
        with metrics._lock:
            metrics.trace.append((t, route, seconds))
    with PLOT_LOCK:
        for fig in (latency_figure(metrics, 3600), ctr_figure(engine, 3600)):
            lines = fig.axes[0].lines
            assert lines and all(len(line.get_xdata()) >= 2 for line in lines)
            for line in lines:
                xs = np.asarray(line.get_xdata(orig=False), dtype=float)  # dates, not labels
                assert np.all(np.diff(xs) > 0), xs


# ---------------------------------------------------------------------- 7. snapshots
def test_requests_during_catalogue_changes_each_match_one_snapshot(store, make_client) -> None:
    """Every answer given while items are deleted and added is exactly the answer of one
    catalogue state: the same ids with the same scores, never ids shifted against vectors."""
    engine, client = make_client(store)
    try:
        users = client.get("/users", params={"limit": 6}, headers=AUTH).json()["users"]
        data = engine.snapshot.data
        early = [str(i) for i in data.item_ids[:3]]  # deleting these shifts every index
        changes = [
            (early[0], None),
            ("new-1", {"title": "Rose nail polish, red"}),
            (early[1], None),
        ]
        states = [engine.snapshot]
        answers: list[tuple[str, list[str], list[float]]] = []
        done = threading.Event()

        def read() -> None:
            n = 0
            while not done.is_set():
                user = users[n % len(users)]
                served = engine.recommend(user, k=10)
                rec = served.recommendation
                answers.append((user, rec.item_ids, rec.scores))
                n += 1

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        for item_id, fields in changes:
            time.sleep(0.2)
            if fields is None:
                assert engine.delete_item(item_id)
            else:
                assert engine.upsert_item(item_id, fields)
            states.append(engine.snapshot)
        time.sleep(0.2)
        done.set()
        for t in readers:
            t.join()
        # what each catalogue state answers, from a recommender fitted afresh on it
        from promptrec.recommender import Recommender

        expected = []
        log = engine.store.dataset().events  # a snapshot lets its log go once built
        for snap in states:
            fresh = Recommender("mean-of-items").fit(snap.data.with_events(log))
            lists = {}
            for user in users:
                history = engine.histories.history(user, snap.data, time.time())
                [rec] = fresh.recommend([history], 10)
                lists[user] = (rec.item_ids, rec.scores)
            expected.append(lists)
        assert len(answers) > 20
        matched = set()
        for user, ids, scores in answers:
            hits = [
                n
                for n, lists in enumerate(expected)
                if lists[user][0] == ids and np.allclose(lists[user][1], scores, atol=1e-5)
            ]
            assert hits, f"an answer for {user} matches no catalogue state: {ids}"
            matched.update(hits)
        assert len(matched) >= 2, "the readers never saw a change"
    finally:
        engine.close()
