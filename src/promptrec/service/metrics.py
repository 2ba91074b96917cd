"""Prometheus metrics: every request counted per route and status (rejected ones and server
errors included) with its latency, and the online counts (lists served, clicked, CTR and
conversion per arm, model version and strategy) kept by the store as lists are served and
clicked, so a scrape costs the same whatever the number of stored lists.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptrec.privacy import pseudonym
from promptrec.service.engine import Engine
from promptrec.service.security import send_json

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
log = logging.getLogger("promptrec.service")


class StoreCollector(Collector):
    """``promptrec_online_{impressions,clicked_lists,ctr,conversion}{arm,model_version,
    strategy}`` from the store's online counts; ``promptrec_store_skipped_rows{table}`` (rows
    that cannot be served, skipped at the last build), ``promptrec_pruned_rows{table}``
    (rows deleted by the retention sweep since start) and ``promptrec_event_commits`` /
    ``promptrec_event_writes`` (this worker's feedback commits and the requests they carried:
    their ratio is the group commit's mean group)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["arm", "model_version", "strategy"]
        shown = GaugeMetricFamily("promptrec_online_impressions", "Lists served", labels=labels)
        clicks = GaugeMetricFamily(
            "promptrec_online_clicked_lists", "Served lists with a click", labels=labels
        )
        ctr = GaugeMetricFamily(
            "promptrec_online_ctr", "Share of served lists clicked", labels=labels
        )
        conversion = GaugeMetricFamily(
            "promptrec_online_conversion", "Share of served lists with a purchase", labels=labels
        )
        for row in self.engine.impressions.online_stats():
            key = [row["arm"], row["model_version"], row["strategy"]]
            shown.add_metric(key, row["impressions"])
            clicks.add_metric(key, row["clicks"])
            ctr.add_metric(key, row["ctr"])
            conversion.add_metric(key, row["conversion"])
        skipped = GaugeMetricFamily(
            "promptrec_store_skipped_rows",
            "Stored rows that cannot be served, skipped at the last build",
            labels=["table"],
        )
        for table, n in sorted(self.engine.snapshot.skipped.items()):
            skipped.add_metric([table], n)
        pruned = CounterMetricFamily(
            "promptrec_pruned_rows",
            "Rows deleted by the retention sweep since start",
            labels=["table"],
        )
        for table, n in sorted(self.engine.pruned.items()):
            pruned.add_metric([table], n)
        dropped = CounterMetricFamily(
            "promptrec_dropped_lists",
            "Served lists dropped from memory while the store could not take them",
            value=self.engine.impressions.dropped,
        )
        group = self.engine.state.group
        commits = CounterMetricFamily(
            "promptrec_event_commits",
            "Durable commits of POST /events writes in this worker (group commit)",
            value=group.commits,
        )
        writes = CounterMetricFamily(
            "promptrec_event_writes",
            "POST /events writes committed in this worker (several share a commit)",
            value=group.writes,
        )
        yield from (shown, clicks, ctr, conversion, skipped, pruned, dropped, commits, writes)


class Metrics:
    """The service's registry, plus a short in-memory latency trace for the dashboard."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "promptrec_requests",
            "HTTP requests by route and status (rejected requests and server errors included)",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "promptrec_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StoreCollector(engine))
        self.trace: deque[tuple[float, str, float]] = deque(maxlen=50_000)
        self._lock = threading.Lock()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        with self._lock:
            self.trace.append((time.time(), route, seconds))

    def recent(self) -> list[tuple[float, str, float]]:
        with self._lock:
            return list(self.trace)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_ERROR = json.dumps({"detail": "internal server error (logged by the service)"}).encode()


class ObserveRequests:
    """The outermost middleware: counts and times every request by route and status, whoever
    answered it (a refused body, a missing key, a validation error, a server error), and
    turns an unhandled exception into a logged, counted 500 with a JSON body.

    Routes are labelled by their template (``/items/{item_id}``), never by the raw path (whose
    values are unbounded), ``unmatched`` where none matches; unknown methods as ``other``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, log_key: bytes) -> None:
        self.app = app
        self.metrics = metrics
        self.log_key = log_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = False

        async def tracking_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), _route(scope))
            status = 500
            if not answered:
                await send_json(send, 500, _ERROR)
        if not answered and scope.get("promptrec.disconnected"):
            status = 499  # the client left before sending its whole request: not our error
        seconds = time.perf_counter() - started
        route = _route(scope)
        method = scope.get("method", "")
        self.metrics.observe(route, method if method in _METHODS else "other", status, seconds)
        if log.isEnabledFor(logging.DEBUG):  # the pseudonym's HMAC only when it is logged
            user = _user(scope)
            log.debug(
                "%s %s %d %.1fms user=%s",
                method,
                route,
                status,
                seconds * 1000,
                pseudonym(user, self.log_key) if user else "-",
            )


def _route(scope: Scope) -> str:
    """The route template of a request (matched by the router, or here for requests refused
    before routing), else ``unmatched``."""
    route = scope.get("route")
    if route is None:
        app: Any = scope.get("app")
        for candidate in _routes(getattr(app, "router", None)):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", "unmatched")


def _routes(router: Any) -> Iterator[Any]:
    """The routes of ``router``, those of the routers included in it too (FastAPI keeps an
    included router as one entry; promptrec includes its routers without a prefix)."""
    for candidate in getattr(router, "routes", ()):
        inner = getattr(candidate, "original_router", None)
        if inner is not None and not hasattr(candidate, "path"):
            yield from _routes(inner)
        else:
            yield candidate


def _user(scope: Scope) -> str | None:
    user = (scope.get("path_params") or {}).get("user_id")
    if user is None:
        from urllib.parse import parse_qs

        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("user_id")
        user = values[0] if values else None
    return user
