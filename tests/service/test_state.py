"""The service's room in the store: idempotent feedback, served lists, attributions, online
counts, forgetting a user, the change log; on both backends (see tests/store/test_store.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from promptrec.errors import DataError
from promptrec.service.state import Impression, ServiceState
from promptrec.store import Event, EventWrite, Store, UnknownItemError
from promptrec.store.events import checked
from promptrec.store.schema import SCHEMA_VERSION


@pytest.fixture
def store(store_target: str, shop_folder: Path):
    with Store(store_target) as s:
        s.ingest(shop_folder)
        yield s


@pytest.fixture
def state(store: Store) -> ServiceState:
    return ServiceState(store)


def clicks(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])


def stored(store: Store) -> tuple[dict, pd.DataFrame, list]:
    data = store.dataset()
    return store.counts(), data.events, store.searches()


def served() -> list[Impression]:
    return [
        Impression("r1", "u1", "A", "v1", "mean-of-items", ("a", "b"), 100.0),
        Impression("r2", "u2", "B", "v2", "query", ("c",), 200.5),
        Impression("r3", "u1", "A", "v1", "mean-of-items", ("b",), 3700.0),
    ]


def row(arm, version, strategy, bucket, shown, clicked, carted, bought) -> dict:
    return {
        "arm": arm,
        "model_version": version,
        "strategy": strategy,
        "bucket": bucket,
        "impressions": shown,
        "clicks": clicked,
        "carts": carted,
        "purchases": bought,
        "ctr": clicked / shown,
        "conversion": bought / shown,
    }


def test_an_idempotency_key_replays_the_first_answer(store: Store, state: ServiceState) -> None:
    batch = clicks([("u3", "a", 20.0, "click"), ("u3", "b", 21.0, "click")])
    first = state.add_feedback(batch, idempotency_key="req-1")
    assert first == EventWrite(added=2, duplicates=0, added_rows=(0, 1))
    before = stored(store)
    # a retry with the same key writes nothing, not even its searches, and answers as the first
    retry = [*checked(batch).rows, Event("u3", None, 22.0, "search", query="soap")]
    again = state.add_feedback(retry, idempotency_key="req-1")
    assert again == EventWrite(added=2, duplicates=0, replayed=True)
    assert stored(store)[0] == before[0] and stored(store)[2] == before[2]
    # the same events under another key are duplicates by their event keys
    assert state.add_feedback(batch, idempotency_key="req-2") == EventWrite(0, 2)
    assert state.add_feedback(batch) == EventWrite(0, 2)
    assert store.counts()["events"] == 6


def test_a_failed_write_does_not_spend_its_idempotency_key(state: ServiceState) -> None:
    with pytest.raises(UnknownItemError):
        state.add_feedback(clicks([("u3", "zz", 20.0, "click")]), idempotency_key="req-1")
    write = state.add_feedback(clicks([("u3", "a", 20.0, "click")]), idempotency_key="req-1")
    assert write == EventWrite(1, 0, added_rows=(0,))


def test_bad_rows_are_refused_before_anything_is_written(store: Store, state: ServiceState) -> None:
    before = stored(store)
    with pytest.raises(DataError) as err:
        state.add_feedback(
            [Event("u3", "a", 20.0, "click"), Event("u3", None, 21.0, "search", query="  ")],
            idempotency_key="k",
        )
    assert (err.value.row, err.value.column) == (2, "query")
    assert stored(store)[0] == before[0]
    assert state.add_feedback([Event("u3", "a", 20.0, "click")], idempotency_key="k").added == 1


def test_impressions(state: ServiceState) -> None:
    state.record_impressions(served())
    state.record_impressions(served()[:1])  # a retried request id is ignored
    assert state.counts()["impressions"] == 3
    r1, r2, r3 = served()
    assert state.impressions("u1") == [r3, r1]  # newest first
    assert state.impressions("u1", limit=1) == [r3]
    assert state.impressions("nobody") == []
    assert state.impression("r2") == r2
    assert state.impression("nope") is None
    assert type(state.impression("r1").at) is float


def test_attributions_and_online_stats(state: ServiceState) -> None:
    assert state.online_stats() == []
    state.record_impressions(served())
    batch = clicks(
        [
            ("u1", "a", 101.0, "click"),
            ("u1", "a", 102.0, "purchase"),
            ("u2", "c", 201.0, "cart"),
            ("u1", "b", 3701.0, "view"),  # no attribution
        ]
    )
    write = state.add_feedback(batch, attributions={0: "r1", 1: "r1", 2: "r2"})
    assert write == EventWrite(4, 0, added_rows=(0, 1, 2, 3))
    # attributions are written only for new events: a replayed batch adds none
    state.add_feedback(batch, attributions={0: "r3", 3: "r3"})
    assert state.online_stats() == [
        row("A", "v1", "mean-of-items", None, 2, 1, 0, 1),
        row("B", "v2", "query", None, 1, 0, 1, 0),
    ]
    hourly = state.online_stats(bucket_seconds=3600)
    assert hourly == [
        row("A", "v1", "mean-of-items", 0.0, 1, 1, 0, 1),
        row("B", "v2", "query", 0.0, 1, 0, 1, 0),
        row("A", "v1", "mean-of-items", 3600.0, 1, 0, 0, 0),
    ]
    for stats in hourly:
        assert all(type(stats[k]) is int for k in ("impressions", "clicks", "carts", "purchases"))
        assert type(stats["bucket"]) is float and type(stats["ctr"]) is float
    assert [s["bucket"] for s in state.online_stats(bucket_seconds=150)] == [0.0, 150.0, 3600.0]


def test_repeated_clicks_in_one_batch_are_attributed_under_their_own_keys(
    store: Store, state: ServiceState
) -> None:
    """Two identical clicks in one request are two events (their keys count occurrences):
    only the second answers a list, and its attribution names the second key."""
    state.record_impressions(served())
    same = ("u1", "a", 101.0, "click")
    state.add_feedback(clicks([same, same]), attributions={1: "r1"})
    [(key,)] = store.db.read("SELECT event_key FROM attributions")
    keys = [k for (k,) in store.db.read("SELECT event_key FROM events ORDER BY id")]
    assert key == keys[-1] and key != keys[-2]


def test_online_stats_orders_arms_by_code_point(state: ServiceState) -> None:
    """The same order on both databases, whatever PostgreSQL's collation says."""
    state.record_impressions(
        [Impression(f"r{i}", "u", arm, "v", "s", (), 1.0) for i, arm in enumerate("baBA")]
    )
    assert [s["arm"] for s in state.online_stats()] == ["A", "B", "a", "b"]


def test_feedback_stored_before_its_list_counts_once_the_list_is(
    store: Store, state: ServiceState
) -> None:
    """A click may reach the store before its list (the list's batch failed and waits for the
    next flush): it counts when the list arrives, and forgetting the user takes both away."""
    first, *_ = served()
    state.add_feedback(clicks([("u1", "a", 101.0, "click")]), attributions={0: "r1"})
    assert state.online_stats() == []  # nothing served yet that it could count against
    state.record_impressions([first])
    [counted] = state.online_stats()
    assert (counted["impressions"], counted["clicks"]) == (1, 1)
    state.add_feedback(clicks([("u1", "b", 102.0, "click")]), attributions={0: "r1"})
    assert state.online_stats()[0]["clicks"] == 1  # a list is clicked once
    state.forget_user("u1")
    assert state.online_stats() == []
    sums = "SELECT SUM(clicks), SUM(impressions) FROM online_series"
    assert store.db.read(sums) == [(0, 0)]


def test_online_counts_of_an_older_store_are_filled_on_open(
    store_target: str, shop_folder: Path, raw_sql
) -> None:
    """A store written before the counts (schema 2) gets them from its stored lists."""
    with Store(store_target) as store:
        store.ingest(shop_folder)
        state = ServiceState(store)
        state.record_impressions(served())
        state.add_feedback(
            clicks([("u1", "a", 101.0, "click"), ("u2", "c", 201.0, "purchase")]),
            attributions={0: "r1", 1: "r2"},
        )
        expected = state.online_stats(), state.online_stats(bucket_seconds=3600)
    raw_sql(store_target, "DROP TABLE online_totals")
    raw_sql(store_target, "DROP TABLE online_series")
    raw_sql(store_target, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with Store(store_target) as store:
        assert store.meta("schema_version") == str(SCHEMA_VERSION)
        state = ServiceState(store)
        assert (state.online_stats(), state.online_stats(bucket_seconds=3600)) == expected


def test_forgetting_a_user_removes_everything_of_theirs(store: Store, state: ServiceState) -> None:
    state.record_impressions(served())
    state.add_feedback(
        [
            Event("u1", "a", 101.0, "click"),
            Event("u1", "b", 102.0, "click"),
            Event("u2", "c", 201.0, "cart"),
            Event("u1", None, 99.0, "search", query="soap"),
            Event("u2", None, 199.0, "search", query="balm"),
        ],
        attributions={0: "r1", 1: "r3", 2: "r2"},
    )
    assert state.forget_user("u1") == {
        "events": 5,  # three from the file, two clicks
        "searches": 1,
        "impressions": 2,
        "attributions": 2,
    }
    assert store.searches() == [("u2", "balm", 199.0)]
    assert state.impressions("u1") == [] and state.impression("r2") is not None
    assert [s["clicks"] + s["carts"] for s in state.online_stats()] == [1]
    assert set(store.dataset().events["user_id"]) == {"u2"}
    assert state.forget_user("u1") == dict.fromkeys(
        ("events", "searches", "impressions", "attributions"), 0
    )


def test_catalogue_changes_are_logged_with_the_change(store: Store, state: ServiceState) -> None:
    assert state.catalogue_version() == 0
    assert state.upsert_item("z", {"title": "Zest"}) is True
    assert state.delete_item("a") is True and state.delete_item("a") is False
    assert state.catalogue_changes(0) == [(1, "z"), (2, "a")]
    assert state.catalogue_version() == 2 and state.catalogue_changes(2) == []
    state.prune(changes_before=1e12)  # all but the newest change go
    with pytest.raises(LookupError):
        state.catalogue_changes(0)
    assert store.item_text("z") == '{"title": "Zest"}' and store.item_text("a") is None


def test_concurrent_writers_are_serialised(store_target: str, shop_folder: Path) -> None:
    """Four connections retry one request at once: exactly one writes, three replay it."""
    with Store(store_target) as store:
        store.ingest(shop_folder)
    stores = [Store(store_target) for _ in range(4)]
    states = [ServiceState(s) for s in stores]
    batch = clicks([("u9", "a", 99.0, "click"), ("u9", "b", 99.0, "click")])
    start = threading.Barrier(len(stores))
    results: list[EventWrite] = []

    def write(state: ServiceState) -> None:
        start.wait()
        results.append(state.add_feedback(batch, idempotency_key="same"))

    threads = [threading.Thread(target=write, args=(s,)) for s in states]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for s in stores:
            s.close()
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    assert {(r.added, r.duplicates) for r in results} == {(2, 0)}
    with Store(store_target) as store:
        assert store.counts()["events"] == 6


def _held_commits(state: ServiceState, monkeypatch, waiting: int, fail: int | None = None):
    """The first commit waits (a slow disk) until ``waiting`` writes are queued behind it; the
    commit numbered ``fail`` (from 0) fails as a full disk would. Returns the commits made."""
    db = state.db
    real = db.commit
    made: list[int] = []

    def commit() -> None:
        n = len(made)
        made.append(n)
        if n == 0:
            deadline = time.monotonic() + 30
            while state.group.waiting < waiting and time.monotonic() < deadline:
                time.sleep(0.005)
        if n == fail:
            raise db.errors("disk I/O error")
        real()

    monkeypatch.setattr(db, "commit", commit)
    return made


def _concurrently(state: ServiceState, batches: list) -> list[EventWrite | BaseException]:
    start = threading.Barrier(len(batches))
    results: list[EventWrite | BaseException] = [None] * len(batches)  # type: ignore[list-item]

    def write(n: int) -> None:
        start.wait()
        time.sleep(0.05 * (n > 0))  # the first leads, the others queue behind it
        try:
            results[n] = state.add_feedback(batches[n])
        except Exception as exc:  # noqa: BLE001 - each request's own outcome
            results[n] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_requests_arriving_together_share_one_commit(
    store: Store, state: ServiceState, monkeypatch
) -> None:
    made = _held_commits(state, monkeypatch, waiting=15)
    batches = [clicks([(f"g{n}", "a", 50.0 + n, "click")]) for n in range(16)]
    batches[5] = clicks([("g5", "nope", 55.0, "click")])  # one request's own error
    results = _concurrently(state, batches)
    assert isinstance(results[5], UnknownItemError)
    assert all(r == EventWrite(1, 0, added_rows=(0,)) for n, r in enumerate(results) if n != 5)
    # every acknowledged event is stored; the bad request wrote nothing
    events = store.dataset().events
    assert set(events["user_id"]) >= {f"g{n}" for n in range(16) if n != 5}
    assert "g5" not in set(events["user_id"])
    # the first commit carried the first request, the second the fifteen queued behind it
    assert len(made) == 2 and (state.group.commits, state.group.writes) == (2, 15)


def test_coroutines_share_commits_and_their_loop_runs_meanwhile(
    store: Store, state: ServiceState, monkeypatch
) -> None:
    """``POST /events`` awaits its commit on the event loop: the loop serves other work while
    the writer commits, and writes submitted together share a commit as threads' do."""
    made = _held_commits(state, monkeypatch, waiting=15)
    batches = [clicks([(f"c{n}", "a", 80.0 + n, "click")]) for n in range(16)]
    batches[5] = clicks([("c5", "nope", 85.0, "click")])  # one request's own error
    ticks = 0

    async def write(n: int) -> EventWrite | BaseException:
        await asyncio.sleep(0.05 * (n > 0))  # the first is committed alone, the others queue
        try:
            return await state.add_feedback_async(batches[n])
        except Exception as exc:  # noqa: BLE001 - each request's own outcome
            return exc

    async def main() -> list[EventWrite | BaseException]:
        nonlocal ticks
        writes = asyncio.gather(*(write(n) for n in range(16)))
        while not writes.done():  # the loop is free while the (held) commit runs
            ticks += 1
            await asyncio.sleep(0.002)
        return writes.result()

    results = asyncio.run(main())
    assert isinstance(results[5], UnknownItemError)
    assert all(r == EventWrite(1, 0, added_rows=(0,)) for n, r in enumerate(results) if n != 5)
    users = set(store.dataset().events["user_id"])
    assert users >= {f"c{n}" for n in range(16) if n != 5} and "c5" not in users
    assert len(made) == 2 and (state.group.commits, state.group.writes) == (2, 15)
    assert ticks >= 3


def test_a_failed_group_commit_fails_every_request_in_it(
    store: Store, state: ServiceState, monkeypatch
) -> None:
    before = store.counts()["events"]
    _held_commits(state, monkeypatch, waiting=3, fail=1)
    results = _concurrently(state, [clicks([(f"h{n}", "a", 60.0, "click")]) for n in range(4)])
    assert results[0] == EventWrite(1, 0, added_rows=(0,))  # its own commit, before
    assert all(isinstance(r, state.db.errors) for r in results[1:])  # the failed group's
    assert store.counts()["events"] == before + 1  # the failed group stored nothing
    # the next write goes through
    assert state.add_feedback(clicks([("h1", "a", 60.0, "click")])).added == 1


def test_an_interrupted_commit_fails_its_writes_with_an_error_of_their_own(
    store: Store, state: ServiceState, monkeypatch
) -> None:
    """An interrupt inside the writer reaches no caller as such (handed to a coroutine it would
    stop the service's event loop): each write fails with a RuntimeError caused by it."""
    before = store.counts()["events"]

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(state.db, "commit", interrupted)
    with pytest.raises(RuntimeError, match="interrupted") as failed:
        state.add_feedback(clicks([("k1", "a", 70.0, "click")]))
    assert isinstance(failed.value.__cause__, KeyboardInterrupt)
    monkeypatch.undo()
    assert store.counts()["events"] == before
    assert state.add_feedback(clicks([("k1", "a", 70.0, "click")])).added == 1


def test_a_group_write_inside_a_transaction_is_refused_not_a_hang(state: ServiceState) -> None:
    with state.db.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
        state.add_feedback(clicks([("k2", "a", 71.0, "click")]))


def test_a_closed_writer_commits_what_was_queued_then_refuses(
    store: Store, state: ServiceState, monkeypatch
) -> None:
    real = state.db.commit
    made: list[int] = []

    def commit() -> None:  # the first commit lasts until the writer is closed, three queued
        deadline = time.monotonic() + 30
        while not made and not (state.group._closed and state.group.waiting >= 3):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        made.append(1)
        real()

    monkeypatch.setattr(state.db, "commit", commit)
    closing = threading.Thread(target=lambda: (time.sleep(0.3), state.group.close()))
    closing.start()
    results = _concurrently(state, [clicks([(f"q{n}", "a", 72.0, "click")]) for n in range(4)])
    closing.join(30)
    assert all(r == EventWrite(1, 0, added_rows=(0,)) for r in results)
    assert len(made) == 2  # the three queued when it closed: one commit after it
    assert {f"q{n}" for n in range(4)} <= set(store.dataset().events["user_id"])
    with pytest.raises(RuntimeError, match="closed"):
        state.add_feedback(clicks([("q9", "a", 73.0, "click")]))
