"""Group commit: writes of requests that arrive together share one durable commit.

A single-event ``POST /events`` used to be one transaction, so one fsync, each: the disk's
flush rate capped the events a second, however many clients wrote. :class:`GroupCommit` hands
every write to one writer thread, which runs each in its own savepoint of a shared transaction:
it takes every write queued so far, commits them together, and meanwhile the next ones queue
(as PostgreSQL's and MySQL's own group commit do). A request returns only once its transaction
is on disk, so an acknowledged write is still a durable one. A request whose write fails (an
unknown item, say) is rolled back to its savepoint alone and gets its own error; a failed commit
fails every request of the group, none of which was acknowledged.

Writes come from threads (:meth:`GroupCommit.run`) or from coroutines on an event loop
(:meth:`GroupCommit.submit`): a coroutine waits for its commit without holding a thread, and
the writer wakes each loop once per commit, whatever the number of its requests in the group.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from promptrec.store.database import Database

T = TypeVar("T")
#: at most this many requests share one commit (a bound on the time the store is held)
MAX_GROUP = 512


@dataclass
class _Pending(Generic[T]):
    """One request's write, then its outcome, and how its caller learns it: a thread waits on
    ``done``; a coroutine awaits ``future`` on ``loop``."""

    work: Callable[[Database], T]
    done: threading.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[T] | None = None
    value: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Run writes on ``db`` in shared transactions (see the module docstring).

    Args:
        db: the store's database (one connection for the process's threads).
        max_group: at most this many writes per commit.
    """

    def __init__(self, db: Database, max_group: int = MAX_GROUP) -> None:
        self.db = db
        self.max_group = max_group
        self._queue: list[_Pending[Any]] = []
        self._arrived = threading.Condition()  # guards the queue; the writer waits on it
        self._writer: threading.Thread | None = None
        self._closed = False
        #: the commits made and the writes they stored (``/metrics``, benchmarks)
        self.commits = 0
        self.writes = 0

    @property
    def waiting(self) -> int:
        """Writes queued for the next commit."""
        with self._arrived:
            return len(self._queue)

    def run(self, work: Callable[[Database], T]) -> T:
        """Run ``work(db)`` inside a transaction shared with the writes queued beside it;
        return its value once that transaction is committed (raise its error, or the
        commit's). Called from a thread (never from the event loop: it blocks).

        Raises:
            RuntimeError: called inside a transaction of the store's connection, or from a
                write (the writer would wait for its caller forever).
        """
        if self.db.in_transaction_here() or threading.current_thread() is self._writer:
            raise RuntimeError("a group-commit write inside a transaction: use a savepoint")
        done = threading.Event()
        pending: _Pending[T] = _Pending(work, done)
        self._enqueue(pending)
        done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.value

    async def submit(self, work: Callable[[Database], T]) -> T:
        """:meth:`run` for a coroutine: awaits the commit without holding a thread. Cancelling
        the caller does not withdraw the write (it may be committed already)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Pending(work, None, loop, future))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer thread once the writes queued are committed; a later write is
        refused."""
        with self._arrived:
            writer, self._closed = self._writer, True
            self._arrived.notify()
        if writer is not None:
            writer.join(timeout)

    def _enqueue(self, pending: _Pending[Any]) -> None:
        with self._arrived:
            if self._closed:
                raise RuntimeError("the store's writer is closed (the service is stopping)")
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_forever, name="group-commit", daemon=True
                )
                self._writer.start()
            self._queue.append(pending)
            self._arrived.notify()

    def _write_forever(self) -> None:
        """The writer thread: each commit takes every write queued meanwhile (up to
        ``max_group``)."""
        while True:
            with self._arrived:
                while not self._queue:
                    if self._closed:
                        self._writer = None
                        return
                    self._arrived.wait()
                group = self._queue[: self.max_group]
                del self._queue[: self.max_group]
            self._commit(group)
            _settle(group)

    def _commit(self, group: list[_Pending[Any]]) -> None:
        """One transaction for ``group``, each write in its own savepoint; every write of it
        has its value or its error when this returns."""
        try:
            with self.db.transaction() as db:
                for pending in group:
                    db.execute("SAVEPOINT request")
                    try:
                        pending.value = pending.work(db)
                    except Exception as exc:  # this request's error: undo its part alone
                        db.execute("ROLLBACK TO SAVEPOINT request")
                        pending.error = exc
                    db.execute("RELEASE SAVEPOINT request")
            self.commits += 1
            self.writes += sum(1 for p in group if p.error is None)
        except Exception as exc:  # the commit failed: nothing of the group is stored
            for pending in group:
                pending.value, pending.error = None, pending.error or exc
        except BaseException as exc:  # interrupted: each caller gets an error of its own (an
            # interrupt handed to a coroutine would stop its whole event loop)
            for pending in group:
                failed = RuntimeError("the commit of this write was interrupted")
                failed.__cause__ = exc
                pending.value, pending.error = None, pending.error or failed


def _settle(group: list[_Pending[Any]]) -> None:
    """Tell each write's caller its outcome: threads at once, each event loop in one wake-up."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending[Any]]] = {}
    for pending in group:
        if pending.done is not None:
            pending.done.set()
        elif pending.loop is not None:
            by_loop.setdefault(pending.loop, []).append(pending)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, waiting)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass


def _resolve(waiting: list[_Pending[Any]]) -> None:
    """On the event loop: hand each coroutine its write's outcome (unless it was cancelled)."""
    for pending in waiting:
        future = pending.future
        if future is None or future.done():
            continue
        try:
            if pending.error is not None:
                future.set_exception(pending.error)
            else:
                future.set_result(pending.value)
        except Exception as exc:  # an error asyncio refuses to carry (StopIteration): say so
            failed = RuntimeError(f"this write's outcome could not be handed over: {exc}")
            future.set_exception(failed)
