"""Faults on a real server process (`promptrec serve`): a normal stop (SIGTERM) and a crash
(kill -9) under traffic, a second service on the same store, a restart over poisoned rows, and
answers during catalogue changes, each checked against the store afterwards."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from promptrec.cli.common import load_data
from promptrec.recommender import Recommender
from promptrec.service.process import LiveServer
from promptrec.store import Store

AUTH = {"X-API-Key": "test-key"}


def _serve(slice_files, db, log, *, ingest: bool = True, flush: float = 0.25) -> LiveServer:
    catalog, events = slice_files
    args = ["--db", str(db), "--flush-seconds", str(flush)]
    if ingest:
        args += ["--catalog", str(catalog), "--events", str(events)]
    return LiveServer(args, log).start()


class Traffic:
    """Readers (GET /recommend) and writers (POST /events, each with its own idempotency key)
    on their own connections, recording what the server answered, until it stops answering."""

    def __init__(self, url: str, users: list[str], items: list[str]) -> None:
        self.url, self.users, self.items = url, users, items
        self.lists: list[tuple[str, str, list[str]]] = []  # (request_id, user, items) answered
        self.acked: list[dict] = []  # events whose POST answered 200
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(n,)) for n in range(3)]
        self._threads += [threading.Thread(target=self._write, args=(n,)) for n in range(2)]

    @classmethod
    def until(cls, url: str, data, *, lists: int, events: int) -> Traffic:
        """Traffic on the first 50 users and 40 items of ``data``, running once at least
        ``lists`` lists were served and ``events`` events acknowledged."""
        traffic = cls(url, data.user_ids[:50], [str(i) for i in data.item_ids[:40]]).start()
        deadline = time.monotonic() + 60
        while len(traffic.lists) < lists or len(traffic.acked) < events:
            assert time.monotonic() < deadline and not traffic.errors, traffic.errors[:3]
            time.sleep(0.05)
        return traffic

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=60)

    def _read(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for i in range(1_000_000):
                user = self.users[(n + 3 * i) % len(self.users)]
                try:
                    r = client.get("/recommend", params={"user_id": user, "k": 5})
                except httpx.TransportError:
                    return
                if r.status_code != 200:
                    self.errors.append(f"GET /recommend {r.status_code}: {r.text}")
                    return
                body = r.json()
                self.lists.append((body["request_id"], user, [x["item_id"] for x in body["items"]]))

    def _write(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for i in range(1_000_000):
                event = {
                    "user_id": f"writer-{n}-{i % 5}",
                    "item_id": self.items[i % len(self.items)],
                    "event": "view",
                    "timestamp": 1.6e9 + 10 * i + n,
                }
                try:
                    r = client.post(
                        "/events",
                        json={"events": [event]},
                        headers={**AUTH, "Idempotency-Key": f"w{n}-{i}"},
                    )
                except httpx.TransportError:
                    return
                if r.status_code != 200:
                    self.errors.append(f"POST /events {r.status_code}: {r.text}")
                    return
                self.acked.append(event)


def _stored(db) -> tuple[set[str], set[tuple]]:
    with Store(db) as store:
        lists = {r[0] for r in store.db.read("SELECT request_id FROM impressions")}
        events = set(store.db.read("SELECT user_id, item_id, timestamp FROM events"))
    return lists, events


def test_sigterm_under_traffic_loses_no_acknowledged_event_and_no_served_list(
    slice_files, beauty_slice, tmp_path
) -> None:
    db = tmp_path / "term.db"
    # lists are written every 30 s here: only the graceful stop can have stored the last ones
    server = _serve(slice_files, db, tmp_path / "server.log", flush=30.0)
    traffic = Traffic.until(server.url, beauty_slice, lists=150, events=20)
    server.proc.send_signal(signal.SIGTERM)  # a normal stop, in the middle of the traffic
    code = server.proc.wait(timeout=60)
    traffic.join()
    assert code in (0, -signal.SIGTERM), server.log.read_text()[-3000:]
    assert not traffic.errors, traffic.errors[:3]
    lists, events = _stored(db)
    answered = {rid for rid, _, _ in traffic.lists}
    assert len(answered) >= 150 and len(traffic.acked) >= 20
    assert answered <= lists, f"{len(answered - lists)} served lists were not stored"
    acked = {(e["user_id"], e["item_id"], e["timestamp"]) for e in traffic.acked}
    assert acked <= events, f"{len(acked - events)} acknowledged events were lost"


def test_kill_9_loses_no_event_and_every_click_on_a_served_list_is_stored(
    slice_files, beauty_slice, tmp_path
) -> None:
    db = tmp_path / "crash.db"
    log = tmp_path / "server.log"
    server = _serve(slice_files, db, log)
    traffic = Traffic.until(server.url, beauty_slice, lists=150, events=20)
    server.kill()  # a crash: no shutdown, no flush
    traffic.join()
    assert not traffic.errors, traffic.errors[:3]
    stored_lists, events = _stored(db)
    acked = {(e["user_id"], e["item_id"], e["timestamp"]) for e in traffic.acked}
    assert acked <= events, f"{len(acked - events)} acknowledged events were lost"

    server = _serve(slice_files, db, log, ingest=False)
    try:
        # every user clicks the first item of each list they were shown before the crash
        clicks = [
            {"user_id": user, "item_id": items[0], "event": "click", "request_id": rid}
            for rid, user, items in traffic.lists
            if items
        ]
        answers = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for start in range(0, len(clicks), 50):
                r = client.post(
                    "/events", json={"events": clicks[start : start + 50]}, headers=AUTH
                )
                assert r.status_code == 200, r.text
                answers.append(r.json())
    finally:
        server.stop()
    lost = {rid for rid, _, _ in traffic.lists} - stored_lists
    assert sum(a["added"] for a in answers) == len(clicks)  # every click, none refused
    assert sum(a["unknown_request_ids"] for a in answers) == len(lost)
    with Store(db) as store:
        stored_clicks = store.db.scalar("SELECT COUNT(*) FROM events WHERE event = 'click'")
        linked = {r[0] for r in store.db.read("SELECT request_id FROM attributions")}
    assert stored_clicks == len(clicks)
    assert stored_lists & {rid for rid, _, _ in traffic.lists} <= linked  # surviving lists


def test_one_service_per_store_and_a_poisoned_store_still_starts(
    slice_files, beauty_slice, tmp_path
) -> None:
    db = tmp_path / "shared.db"
    log = tmp_path / "server.log"
    first = _serve(slice_files, db, log)
    try:
        # a chunked body (no Content-Length) over the 1 MiB limit, streamed by a real client
        def chunks():
            for _ in range(40):
                yield b" " * 65536

        r = httpx.post(
            f"{first.url}/events",
            content=chunks(),
            headers={**AUTH, "Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 413 and "request body over" in r.json()["detail"]
        second = subprocess.run(
            [sys.executable, "-m", "promptrec.cli.main", "serve", "--db", str(db), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"already served by promptrec serve on {first.url}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.stop()

    with sqlite3.connect(db) as conn:  # rows no check ever saw (a hand edit, an old version)
        conn.execute(
            "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?)",
            ("poison", json.dumps({"title": "Code", "stock": 10**22}), 1.0),
        )
        conn.execute(
            "INSERT INTO events(event_key, user_id, item_id, timestamp, event) "
            "VALUES ('k1', 'u', ?, 'not a time', 'view')",
            (str(beauty_slice.item_ids[0]),),
        )
    server = _serve(slice_files, db, log, ingest=False)
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["skipped_rows"] == {"items": 1, "events": 1}
    assert "skipped 1 item rows and 1 event rows" in log.read_text()
    server.kill()  # a crashed service releases the store at once
    server = _serve(slice_files, db, log, ingest=False)
    server.stop()


def test_answers_during_catalogue_changes_each_match_one_snapshot(
    slice_files, beauty_slice, tmp_path
) -> None:
    """Readers hammer /recommend while items are deleted and added: every answer must be the
    exact answer (ids and scores) of one catalogue state, computed afresh afterwards."""
    catalog, events = slice_files
    server = _serve(slice_files, tmp_path / "live.db", tmp_path / "server.log")
    users = [str(u) for u in beauty_slice.user_ids[:8]]
    early = [str(i) for i in beauty_slice.item_ids[:3]]  # deleting these shifts every index
    changes = [
        (early[0], None),
        ("new-1", {"title": "Rose nail polish, deep red", "brand": "OPI", "price": 9.5}),
        (early[1], None),
        ("new-2", {"title": "Argan oil shampoo for dry hair", "price": 12.0}),
        (early[2], None),
    ]
    answers: list[tuple[str, list[str], list[float], float, float]] = []
    windows: list[tuple[float, float]] = []
    stop = threading.Event()

    def read(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            i = n
            while not stop.is_set():
                user = users[i % len(users)]
                sent = time.monotonic()
                body = client.get("/recommend", params={"user_id": user, "k": 10}).json()
                got = time.monotonic()
                items = body["items"]
                ids, scores = [x["item_id"] for x in items], [x["score"] for x in items]
                answers.append((user, ids, scores, sent, got))
                i += 3

    readers = [threading.Thread(target=read, args=(n,)) for n in range(3)]
    try:
        for t in readers:
            t.start()
        with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as client:
            for item_id, fields in changes:
                time.sleep(0.3)
                began = time.monotonic()
                if fields is None:
                    assert client.delete(f"/items/{item_id}").status_code == 204
                else:
                    assert client.put(f"/items/{item_id}", json=fields).status_code == 200
                windows.append((began, time.monotonic()))
        time.sleep(0.3)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
        server.stop()

    # the catalogue states, built the way the service builds them (a store of the same files)
    with Store(tmp_path / "truth.db") as truth:
        truth.ingest(load_data(None, catalog, events))
        states = [truth.dataset()]
        for item_id, fields in changes:
            if fields is None:
                truth.delete_item(item_id)
            else:
                truth.upsert_item(item_id, fields)
            states.append(truth.dataset())
    expected = []
    for data in states:
        rec = Recommender("mean-of-items").fit(data)
        lists = {r.user_id: r for r in rec.recommend(users, 10)}
        expected.append({u: (lists[u].item_ids, lists[u].scores) for u in users})

    during = 0
    for user, ids, scores, sent, got in answers:
        hits = [
            n
            for n, lists in enumerate(expected)
            if lists[user][0] == ids and np.allclose(lists[user][1], scores, atol=1e-4)
        ]
        assert hits, f"an answer for {user} matches no catalogue state: {ids} {scores}"
        during += any(sent < end and got > began for began, end in windows)
    assert len(answers) > 50 and during > 10, (len(answers), during)
