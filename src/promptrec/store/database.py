"""One database connection: an embedded SQLite file (the default) or a PostgreSQL database.

Everything promptrec stores (the catalogue and log, :class:`~promptrec.store.store.Store`; the
service's own state, :class:`~promptrec.service.state.ServiceState`) is written through one
:class:`Database`, in SQL written once in the words the two databases share; the few that differ
(placeholders, column types, how a write transaction takes its lock, time buckets) live in one
small class per database (:class:`SQLiteDatabase`, :class:`PostgresDatabase`).

Writers are serialised: SQLite takes its write lock at ``BEGIN IMMEDIATE``; PostgreSQL takes a
transaction-scoped advisory lock named after the store's schema right after ``BEGIN``. The
SQLite journal is WAL with ``synchronous=FULL``: an acknowledged write survives a power cut
(PostgreSQL commits durably with its default settings).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: SQLite's own lock alone
    fcntl = None  # type: ignore[assignment]

from promptrec.errors import ConfigError

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (a string): a PostgreSQL store."""
    return isinstance(target, str) and target.startswith(_POSTGRES_SCHEMES)


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` parameter) as ``***``."""
    url = re.sub(r"^([a-z]+://[^:@/?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


class Database:
    """One connection (shared by a process's threads, one statement at a time), and what the
    SQL needs said differently on this database.

    SQL is written with ``?`` placeholders; a table definition may use the words
    ``{serial}`` (an auto-numbered primary key), ``{float}`` (a 64-bit float: PostgreSQL's
    REAL is 32 bits) and ``{item_order}`` (the column that keeps rows in insertion order where
    the database has no rowid), which :meth:`create` fills in.

    Attributes:
        location: the file, or the URL without its password (for messages).
        name: the default name of what it holds (the file's stem, the database's name).
        item_order: the items column that orders them by first insertion.
        errors: the driver's base exception.
        lock: held while a statement runs (a process's threads share the connection): hold it
            around several reads to see them in one go.
    """

    schema_words: Mapping[str, str]
    item_order: str
    location: str
    name: str
    errors: type[Exception]
    _conn: Any = None

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._in_transaction = False
        self._owner: int | None = None  # the thread inside the transaction
        self._after_commit: list[Callable[[], None]] = []

    def open_error(self, exc: BaseException) -> ConfigError:
        """A one-line error naming the store (never its password: :attr:`location` has none,
        and the drivers' messages name no password) and what went wrong; closes the
        connection."""
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        return ConfigError(f"cannot open the store {self.location}: {one_line(exc)}")

    # ------------------------------------------------------------------ statements
    def sql(self, text: str) -> str:
        return text

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor has ``rowcount``, ``fetchone`` and ``fetchall``.
        Inside :meth:`transaction` (or :meth:`read`, which hold the connection's lock)."""
        return self._conn.execute(self.sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per row; returns the number of rows changed in all."""
        raise NotImplementedError

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row one query returns."""
        with self.lock:
            return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row one query returns."""
        with self.lock:
            return self.execute(sql, params).fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction: committed on success, rolled back on any exception.

        Raises:
            RuntimeError: inside another transaction of this connection (SQLite refuses a
                nested BEGIN; PostgreSQL would commit the outer one's work early).
        """
        if self.in_transaction_here():  # checked first: the writers' queue would wait forever
            raise RuntimeError("a transaction inside a transaction: use a savepoint")
        with self.writers(), self.lock:  # (another thread's transaction has ended here)
            self._in_transaction, self._owner = True, threading.get_ident()
            try:
                self.begin()
                yield self
                self.commit()
                for action in self._after_commit:
                    action()
            except BaseException:
                # a failed commit (disk full...) leaves the transaction open: close it; a broken
                # connection cannot roll back; the first error is the one to see
                with suppress(Exception):
                    self.rollback()
                raise
            finally:
                self._in_transaction, self._owner = False, None
                self._after_commit.clear()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the open transaction commits (never if it rolls back): what
        must follow a change that is certain (a file that copies rows just deleted goes)."""
        if not self.in_transaction_here():
            raise RuntimeError("after_commit outside a transaction of this thread")
        self._after_commit.append(action)

    def in_transaction_here(self) -> bool:
        """Whether the calling thread is inside a transaction of this connection."""
        return self._in_transaction and self._owner == threading.get_ident()

    def writers(self) -> AbstractContextManager[None]:
        """Held around a write transaction, outside :attr:`lock`: where writers queue before
        the database's own lock (nothing here; SQLite: :meth:`SQLiteDatabase.writers`)."""
        return nullcontext()

    def create(self, schema: str) -> None:
        """Create the tables and indexes of ``schema`` (``;``-separated statements, each
        ``IF NOT EXISTS``), inside a transaction."""
        for statement in schema.format_map(self.schema_words).split(";"):
            if statement.strip():
                self.execute(statement)

    # ------------------------------------------------------------------ what differs
    def begin(self) -> None:
        """Start a write transaction, waiting for any other writer of the store to finish."""
        raise NotImplementedError

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def bucket(self, expr: str, seconds: float) -> str:
        """SQL for ``expr`` (seconds) rounded down to a multiple of ``seconds``."""
        raise NotImplementedError

    def close(self) -> None:
        self._conn.close()


class SQLiteDatabase(Database):
    """An SQLite file (created with its folder when missing), or ``:memory:``.

    Write transactions of promptrec's processes on one file queue on a lock file beside it
    (``STORE-writer``, :func:`fcntl.flock` where the platform has it) before SQLite's own lock:
    the next writer starts the moment the last commits. SQLite alone makes a waiting writer
    poll, sleeping up to 100 ms between tries, which cost several workers of one service most
    of their write rate and gave single events second-long waits. A promptrec writer now waits
    as long as another holds the lock (a long ingest, say), where SQLite's wait gave up after
    30 s; other programs writing the file still wait on SQLite's lock, for 30 s at most.
    """

    schema_words = {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "float": "REAL",
        "item_order": "",
    }
    item_order = "rowid"
    errors = sqlite3.Error

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.location = str(path)
        self.name = path.stem
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._conn.execute("PRAGMA synchronous=FULL")
            # 64 MiB of page cache (the default is 2 MiB): a service's inserts into a table of
            # a million served lists stay in memory instead of re-reading index pages
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise self.open_error(exc) from exc
        self._writers = _writer_lock(path)
        self._writers_pid = os.getpid()
        self._queue = threading.Lock()  # this connection's writers, one at a time

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return max(self._conn.executemany(sql, rows).rowcount, 0)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    @contextmanager
    def writers(self) -> Iterator[None]:
        """This connection's writers one at a time, then the file's lock shared with every
        other connection (``STORE-writer``): waited for without polling, and without holding
        :attr:`lock`, so that reads go on meanwhile."""
        with self._queue:
            lock = self._lock_file()
            if lock is None:
                yield
                return
            if _WRITING.get(lock.name) == threading.get_ident():  # it would wait for itself
                raise RuntimeError(
                    f"a write transaction on {self.location} inside another one of this thread "
                    "on the same file (through a second connection)"
                )
            fcntl.flock(lock, fcntl.LOCK_EX)
            _WRITING[lock.name] = threading.get_ident()
            try:
                yield
            finally:
                del _WRITING[lock.name]
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _lock_file(self) -> IO[bytes] | None:
        """The writers' lock file, opened again in a forked child (one open file shared with
        the parent would be one lock for both)."""
        if self._writers is not None and self._writers_pid != os.getpid():
            inherited, self._writers = self._writers, _writer_lock(self.path)
            inherited.close()  # the parent's own copy keeps the parent's lock
            self._writers_pid = os.getpid()
        return self._writers

    def close(self) -> None:
        super().close()
        if self._writers is not None:
            self._writers.close()

    def bucket(self, expr: str, seconds: float) -> str:
        return f"CAST({expr} / {seconds!r} AS INTEGER) * {seconds!r}"


class PostgresDatabase(Database):
    """A PostgreSQL database (needs psycopg): the tables live in the first schema of the
    connection's ``search_path``."""

    schema_words = {
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "float": "DOUBLE PRECISION",
        "item_order": ",\n    seq BIGINT GENERATED ALWAYS AS IDENTITY",
    }
    item_order = "seq"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.location = redact_url(url)
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                f"the store {self.location} is a PostgreSQL database, which needs psycopg: "
                "pip install 'psycopg[binary]'"
            ) from exc
        self.errors = psycopg.Error
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            # libpq's message may quote a piece of the URL, the password included: not shown
            raise ConfigError(f"{self.location}: not a valid PostgreSQL URL") from None
        options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            options["connect_timeout"] = 10
        try:
            self._conn = psycopg.connect(url, **options)
            schema = self._conn.execute("SELECT current_schema()").fetchone()[0]
        except psycopg.Error as exc:
            raise self.open_error(exc) from exc
        self.name = self._conn.info.dbname
        if schema is None:
            self._conn.close()
            raise ConfigError(
                f"cannot open the store {self.location}: no schema to make its tables in "
                "(none of the schemas in its search_path exists)"
            )
        # one advisory lock per store (database and schema), taken by every write transaction
        self._schema = schema
        self._lock_key = self.lock_key("store")

    def lock_key(self, purpose: str) -> int:
        """A 64-bit advisory lock key for this store (database and schema) and ``purpose``."""
        name = f"promptrec.{purpose}:{self.name}.{self._schema}"
        return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._conn.cursor() as cur:
            cur.executemany(self.sql(sql), rows)
            return max(cur.rowcount, 0)

    def begin(self) -> None:
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))

    def bucket(self, expr: str, seconds: float) -> str:
        return f"TRUNC({expr} / {seconds!r}) * {seconds!r}"


#: lock file -> the thread holding it, in this process (to refuse waiting for oneself)
_WRITING: dict[str, int] = {}


def _writer_lock(path: Path) -> IO[bytes] | None:
    """The lock file the writers of the SQLite file ``path`` queue on (None for ``:memory:``,
    where fcntl is missing, or where the folder takes no new file: SQLite's lock alone then)."""
    if fcntl is None or str(path) == ":memory:":
        return None
    try:
        lock = path.with_name(path.name + "-writer").resolve()
        return open(lock, "ab")  # noqa: SIM115 - held open while the store is
    except OSError:
        return None


def open_database(target: str | Path) -> Database:
    """The database a store lives in: a ``postgresql://`` URL, else an SQLite file."""
    if is_postgres_url(target):
        return PostgresDatabase(str(target))
    if re.match(r"postgres(ql)?:/(?!/)", str(target)):
        raise ConfigError(
            f"{target}: this looks like a PostgreSQL URL whose '//' was collapsed by turning it "
            "into a file path; pass the URL as a string"
        )
    return SQLiteDatabase(Path(target))
