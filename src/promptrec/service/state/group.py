"""Group commit: writes of requests that arrive together share one durable commit.

A single-event ``POST /events`` used to be one transaction, so one fsync, each: the disk's
flush rate capped the events a second, however many clients wrote. :class:`GroupCommit` runs
each request's write in its own savepoint of a shared transaction: a request that finds no
commit under way leads one, taking every write queued so far; requests that arrive meanwhile
wait, and the next of them leads the next commit (leader and followers, as PostgreSQL's and
MySQL's own group commit do). Every request returns only once its transaction is on disk, so an
acknowledged write is still a durable one. A request whose write fails (an unknown item, say)
is rolled back to its savepoint alone and gets its own error; a failed commit fails every
request of the group, none of which was acknowledged.
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
        self._turn = threading.Condition()  # guards the queue and who leads
        self._leading = False
        #: the commits made and the writes they stored (``/metrics``, benchmarks)
        self.commits = 0
        self.writes = 0

    @property
    def waiting(self) -> int:
        """Writes queued for the next commit."""
        with self._turn:
            return len(self._queue)

    def run(self, work: Callable[[Database], T]) -> T:
        """Run ``work(db)`` inside a transaction shared with the writes queued beside it;
        return its value once that transaction is committed (raise its error, or the
        commit's)."""
        pending: _Pending[T] = _Pending(work)
        with self._turn:
            self._queue.append(pending)
            while not pending.done:
                if self._leading:
                    self._turn.wait()
                    continue
                self._leading = True  # lead the next commit (it holds our own write)
                group = self._queue[: self.max_group]
                del self._queue[: self.max_group]
                self._turn.release()
                try:
                    self._commit(group)
                finally:
                    self._turn.acquire()
                    self._leading = False
                    self._turn.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.value

    def _commit(self, group: list[_Pending[Any]]) -> None:
        """One transaction for ``group``, each write in its own savepoint; every write of it is
        done when this returns (or raises: a KeyboardInterrupt, say, raised in this thread
        alone)."""
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
        except BaseException as exc:  # interrupted: the others fail with an error of their own
            for pending in group:
                failed = RuntimeError("the commit of this write was interrupted")
                failed.__cause__ = exc
                pending.value, pending.error = None, pending.error or failed
            raise
        finally:
            for pending in group:
                pending.done = True
