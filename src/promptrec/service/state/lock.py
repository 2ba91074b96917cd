"""One ``promptrec serve`` per store: the service lock.

A second service, started by mistake with other arms, models or retention, would serve the same
users differently and prune the first one's lists on its own schedule. The lock is the operating
system's (a lock file beside a SQLite store) or PostgreSQL's (a session advisory lock): a
crashed holder releases it at once.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from promptrec.errors import ConfigError
from promptrec.store import Store
from promptrec.store.database import PostgresDatabase

_HINT = "one promptrec serve per store: give it --workers N for more processes"


class ServiceLock:
    """The store's service lock, taken by :meth:`claim` for this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: Any = None
        self.owner = ""

    @property
    def held(self) -> bool:
        return self._held is not None

    def claim(self, owner: str) -> None:
        """Take the lock (``owner`` says who, for a second one's message).

        Raises:
            ConfigError: another process holds it, named where it said who it is.
        """
        store = self.store
        if self._held is not None:
            if owner == self.owner:
                return
            raise ConfigError(
                f"the store {store.location} is already served by {self.owner}; stop it first "
                f"({_HINT})"
            )
        db = store.db
        if isinstance(db, PostgresDatabase):
            key = db.lock_key("service")
            with db.lock:
                taken = db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]
            if not taken:
                holder = store.meta("service_owner") or "another process"
                raise ConfigError(
                    f"the store {store.location} is already served by {holder}; stop it first "
                    f"({_HINT}, or start one with --replica on another machine)"
                )
            self._held, self.owner = key, owner
            store.set_meta("service_owner", owner)
            return
        if store.path is None or str(store.path) == ":memory:":
            self._held, self.owner = True, owner
            return
        import fcntl

        path = store.path.with_name(store.path.name + ".lock")
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"the store {store.location} is already served by {holder}; stop it first ({_HINT})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(owner)
        handle.flush()
        self._held, self.owner = handle, owner

    def release(self) -> None:
        """Give the lock back (closing the store's connection does too, for PostgreSQL)."""
        held, self._held = self._held, None
        if held is None or held is True:
            return
        db = self.store.db
        if isinstance(db, PostgresDatabase):
            with suppress(Exception), db.lock:
                db.execute("SELECT pg_advisory_unlock(?)", (held,)).fetchone()
            return
        held.close()  # closing the file releases its flock
