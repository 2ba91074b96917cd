"""Run `promptrec serve` as a child process on loopback and wait until it is healthy (used by
the crash and hot-swap tests and by the load benchmark)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``promptrec serve`` in a subprocess; ``url`` once :meth:`start` returns."""

    def __init__(self, args: list[str], log: Path, key: str = "test-key") -> None:
        self.args = args
        self.log = log
        self.key = key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> LiveServer:
        env = {**os.environ, "PROMPTREC_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, "-m", "promptrec.cli.main", "serve", *self.args]
        cmd += ["--port", str(self.port), "--api-key", self.key]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing, like a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def clients_per_worker(
    url: str, workers: int, *, timeout: float = 60.0, request_timeout: float = 10.0
) -> dict[int, httpx.Client]:
    """One client per worker process of a server (``promptrec serve --workers N``), by the
    worker's pid: each keeps its connection, so it always talks to the same worker. Fewer
    than ``workers`` when not all of them answered within ``timeout`` seconds."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + timeout
    while len(clients) < workers and time.monotonic() < deadline:
        client = httpx.Client(base_url=url, timeout=request_timeout)
        pid = client.get("/health").json()["worker"]
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
    return clients
