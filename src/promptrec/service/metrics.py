"""Prometheus metrics: request counts and latency per route, and online CTR and conversion per
arm, model version and strategy (read from the store at scrape time, so they survive restarts).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from promptrec.service.engine import Engine

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class OnlineCollector(Collector):
    """``promptrec_online_{impressions,ctr,conversion}{arm,model_version,strategy}``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.engine.impressions.flush()
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
        for row in self.engine.store.online_stats():
            key = [row["arm"], row["model_version"], row["strategy"]]
            shown.add_metric(key, row["impressions"])
            clicks.add_metric(key, row["clicks"])
            ctr.add_metric(key, row["ctr"])
            conversion.add_metric(key, row["conversion"])
        yield from (shown, clicks, ctr, conversion)


class Metrics:
    """The service's registry, plus a short in-memory latency trace for the dashboard."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "promptrec_requests",
            "HTTP requests",
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
        self.registry.register(OnlineCollector(engine))
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
