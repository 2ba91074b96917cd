"""``promptrec serve --workers N``: N worker processes behind one port, one store.

uvicorn's supervisor starts the workers (and restarts one that dies); each builds its own
:class:`~promptrec.service.engine.Engine` from the settings the command hands down in
:data:`SETTINGS_ENV`, without the store's service lock, which the command holds for all of
them. Nothing a request needs lives in one worker only: histories are read from the store,
catalogue changes are followed through the store's log, models through the registry's pointer.
The same factory serves the app under any ASGI server (``PROMPTREC_SERVE_SETTINGS=...
gunicorn -k uvicorn.workers.UvicornWorker 'promptrec.service.workers:worker_app()'``).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from promptrec.errors import ConfigError
from promptrec.service.config import ServeSettings
from promptrec.threads import one_thread_per_request

if TYPE_CHECKING:
    from promptrec.service.state import ServiceState
    from promptrec.store import Store

SETTINGS_ENV = "PROMPTREC_SERVE_SETTINGS"


def _glibc(call: str, *args: int) -> None:
    """Call a glibc malloc tuning function; elsewhere (another libc) nothing is done."""
    try:
        getattr(ctypes.CDLL("libc.so.6"), call)(*args)
    except (OSError, AttributeError):
        pass


def _few_heap_arenas() -> None:
    """Two malloc arenas instead of up to eight per core: requests run on many threads, and
    each arena keeps the pages its thread freed."""
    _glibc("mallopt", -8, 2)  # M_ARENA_MAX


def _release_free_memory() -> None:
    """Hand the heap's free pages back to the system: the build's temporaries (a row per item
    while texts are rendered) are freed, but glibc keeps their pages in the process."""
    _glibc("malloc_trim", 0)


def build_app(
    settings: ServeSettings, store: Store | None = None, state: ServiceState | None = None
) -> FastAPI:
    """The service for ``settings``: its engine built (the catalogue encoded, the models
    loaded), on ``store`` (its caller closes it and the engine; ``state``: the service's state
    on it, when the caller holds its lock), or on a store it opens and closes with the engine
    when the server stops (a worker process)."""
    from promptrec.service.app import create_app
    from promptrec.service.engine import Engine
    from promptrec.service.security import ApiKeys
    from promptrec.store import Store

    _few_heap_arenas()
    owned = store is None
    store = Store(settings.db) if store is None else store
    try:
        engine = Engine(store, settings.engine, state)
    except BaseException:
        if owned:
            store.close()
        raise
    engine.start_polling()
    # what is loaded now (catalogue, models) lives as long as the process: keep it out of the
    # garbage collector's full passes, which otherwise stall requests ~0.1 s
    gc.collect()
    gc.freeze()
    _release_free_memory()
    writer = None
    if settings.reasons is not None:
        from promptrec.service.reasons import make_reason_writer

        writer = make_reason_writer(settings.reasons)
    keys = ApiKeys(
        settings.keys,
        protect_reads=settings.protect_reads,
        public_user_data=settings.public_user_data,
    )
    return create_app(
        engine,
        keys,
        max_body_bytes=settings.max_body_bytes,
        reasons=writer,
        evaluation=Path(settings.evaluation) if settings.evaluation else None,
        close_on_shutdown=owned,
    )


class _TCPConfig(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        # uvicorn makes its shared socket with protocol 0, so asyncio never sets TCP_NODELAY on
        # the connections the workers accept: every answer then waited ~40 ms for the client's
        # delayed ACK (p50 44 ms against 1.8 ms with one process)
        sock = super().bind_socket()
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, sock.detach())


def run_workers(workers: int, host: str, port: int) -> None:
    """Serve :func:`worker_app` from ``workers`` processes on one port (uvicorn's supervisor:
    a worker that dies is replaced), until SIGTERM or Ctrl-C."""
    from uvicorn.supervisors import Multiprocess

    config = _TCPConfig(
        "promptrec.service.workers:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def worker_app() -> FastAPI:
    """The uvicorn factory each worker process runs (settings from :data:`SETTINGS_ENV`)."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise ConfigError(f"{SETTINGS_ENV} is not set: start workers with promptrec serve")
    settings = ServeSettings.model_validate_json(text)
    settings.engine.claim_service = False  # the serve command holds the lock for all workers
    one_thread_per_request()
    with _stoppable_at_once():
        return build_app(settings)


@contextmanager
def _stoppable_at_once() -> Iterator[None]:
    """While a worker builds its engine (minutes at a million items), SIGTERM and SIGINT end
    it at once, as a crash would: uvicorn's handlers, already in place, only note a signal for
    the server loop that starts after the build, and a long native call (encoding, the HNSW
    build) would not see a Python handler anyway. Nothing is served yet and every write of the
    build is a transaction (the store, the embedding cache), so nothing is lost; the
    supervisor's stop then takes as long as the kernel needs to end the process."""
    handlers = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
