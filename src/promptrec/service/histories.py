"""Users' histories as a request reads them: from the store, one indexed query per request.

No service process holds the behaviour log: every worker on a store (``promptrec serve
--workers N``, or several machines on one PostgreSQL database) reads the same rows, so an event
acknowledged by one worker is in the next list any worker serves, a forgotten user is gone
from all of them at once, and a worker's memory does not grow with the log.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.store import Store

SEARCH_CONTEXT = 1800.0  # a search this recent is the live query when the request has none
HISTORY_LIMIT = 500  # the newest events of a user a request reads (and excludes from lists)
USERS_CACHE_SECONDS = 60.0


class StoredHistories:
    """Read users' behaviour from ``store`` (thread-safe).

    Args:
        store: the store.
        limit: the newest events read per user: what prompts and scorers see (they use the
            last 50 or so) and which items a list leaves out as already seen.
    """

    def __init__(self, store: Store, limit: int = HISTORY_LIMIT) -> None:
        self.store = store
        self.limit = limit
        self._users: tuple[float, int, list[str]] = (0.0, 0, [])
        self._lock = threading.Lock()

    def history(self, user_id: str, data: Dataset, now: float) -> UserHistory:
        """The user's history as positions in ``data`` (events of items it does not hold are
        skipped), with a search of the last half hour as its live query."""
        index = data.item_index
        rows = [r for r in self.store.user_history(user_id, self.limit) if r[0] in index]
        search = self.store.latest_search(user_id)
        query = search[0] if search and now - search[1] <= SEARCH_CONTEXT else None
        return UserHistory(
            user_id,
            np.fromiter((index[r[0]] for r in rows), np.int64, len(rows)),
            tuple(r[2] for r in rows),
            np.array([r[3] for r in rows], dtype=np.float64),
            np.array([r[1] for r in rows], dtype=np.float64),
            tuple(r[4] for r in rows),
            query,
        )

    def knows(self, user_id: str) -> bool:
        return self.store.knows_user(user_id)

    def users(self, limit: int) -> list[str]:
        """The users with the most events, most first (for the page's picker; counted at most
        once a minute: it reads the whole log)."""
        with self._lock:
            at, size, users = self._users
            if time.monotonic() - at > USERS_CACHE_SECONDS or size < limit:
                users = self.store.most_active_users(max(limit, 50))
                self._users = (time.monotonic(), max(limit, 50), users)
        return users[:limit]
