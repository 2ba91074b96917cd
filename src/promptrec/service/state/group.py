"""Group commit: writes of requests that arrive together share one durable commit.

A single-event ``POST /events`` used to be one transaction, so one fsync, each: the disk's
flush rate capped the events a second, however many clients wrote. :class:`GroupCommit` runs
each request's write in its own savepoint of a shared transaction: the first request to find
the store free commits everything queued behind it in one go (leader and followers, as
PostgreSQL's and MySQL's own group commit do), and every request returns only once its
transaction is on disk, so an acknowledged write is still a durable one. A request whose write
fails (an unknown item, say) is rolled back to its savepoint alone and gets its own error; a
failed commit fails every request of the group, none of which was acknowledged.
"""

from __future__ import annotations

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
    """One request's write, then its outcome."""

    work: Callable[[Database], T]
    value: Any = None
    error: BaseException | None = None
    done: bool = False


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
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()  # held by the thread committing a group
        #: the number of commits and of writes they carried (``/metrics``, benchmarks)
        self.commits = 0
        self.writes = 0

    def run(self, work: Callable[[Database], T]) -> T:
        """Run ``work(db)`` inside a transaction shared with the writes queued beside it;
        return its value once that transaction is committed (raise its error, or the
        commit's)."""
        pending: _Pending[T] = _Pending(work)
        with self._queue_lock:
            self._queue.append(pending)
        while not pending.done:
            with self._commit_lock:
                if pending.done:  # a leader before us committed it
                    break
                with self._queue_lock:
                    group = self._queue[: self.max_group]
                    del self._queue[: self.max_group]
                self._commit(group)
        if pending.error is not None:
            raise pending.error
        return pending.value

    def _commit(self, group: list[_Pending[Any]]) -> None:
        """One transaction for ``group``, each write in its own savepoint."""
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
            self.writes += len(group)
        except BaseException as exc:  # the commit failed: nothing of the group is stored
            for pending in group:
                pending.value, pending.error = None, pending.error or exc
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: not a request's to keep
        finally:
            for pending in group:
                pending.done = True
