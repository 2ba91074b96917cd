"""The dashboard: online CTR per arm over time, latency over time, the offline evaluation table.

Plots are matplotlib PNGs rendered on request (``/dashboard/ctr.png``, ``/dashboard/latency.png``);
the page ``/dashboard`` shows them beside the table from ``/dashboard/evaluation``.
"""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Response
from fastapi.params import Depends
from fastapi.responses import FileResponse

from promptrec.service.engine import Engine
from promptrec.service.metrics import Metrics

PLOT_LOCK = threading.Lock()  # pyplot's state is global


def _bucket(span: float) -> float:
    """A time bucket giving at most about 60 points over ``span`` seconds (at least a minute,
    the resolution of the stored online counts)."""
    for size in (60, 300, 900, 3600, 4 * 3600, 86400):
        if span / size <= 60:
            return float(size)
    return 7 * 86400.0


def _png(figure: Any) -> Response:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return Response(buffer.getvalue(), media_type="image/png")


def _time_axis(ax: Any, span: float) -> None:
    """Local clock times on the x axis, in time order."""
    import matplotlib.dates as mdates

    fmt = "%H:%M:%S" if span <= 3600 else "%H:%M" if span <= 2 * 86400 else "%m-%d %H:%M"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=_local_zone()))
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)


def _local_zone() -> Any:
    return datetime.now().astimezone().tzinfo


def _when(stamps: Any) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), UTC) for t in stamps]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ctr_figure(engine: Engine, window: float) -> Any:
    """CTR per arm and model version over the last ``window`` seconds (a matplotlib figure;
    the caller holds ``PLOT_LOCK`` and closes it)."""
    plt = _pyplot()
    since = time.time() - window
    rows = engine.impressions.online_stats(bucket_seconds=_bucket(window), since=since)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    arms = sorted({(r["arm"], r["model_version"]) for r in rows})
    for arm, version in arms:
        mine = [r for r in rows if (r["arm"], r["model_version"]) == (arm, version)]
        mine = sorted((r for r in mine if r["impressions"]), key=lambda r: r["bucket"])
        if mine:
            ax.plot(
                _when(r["bucket"] for r in mine),
                [100 * r["ctr"] for r in mine],
                marker="o",
                label=f"{arm} ({version})",
            )
    if not arms:
        ax.text(0.5, 0.5, "no lists served yet", ha="center", va="center")
    else:
        ax.legend(fontsize=8)
        _time_axis(ax, window)
    ax.set_title("Online CTR per arm (% of served lists clicked)")
    ax.set_ylabel("CTR (%)")
    ax.set_ylim(bottom=0)
    return fig


def latency_series(
    trace: list[tuple[float, str, float]], size: float
) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per route (``/recommend``, ``/events``): bucket start times in increasing order, and
    the p50 and p99 latency (ms) of the requests that ended in each ``size``-second bucket."""
    out = {}
    for route in sorted({r for _, r, _ in trace if r in ("/recommend", "/events")}):
        points = np.array([(t, s) for t, r, s in trace if r == route])
        buckets = (points[:, 0] // size) * size
        starts = np.unique(buckets)  # sorted
        ms = [points[buckets == b, 1] * 1000 for b in starts]
        out[route] = (
            [float(b) for b in starts],
            [float(np.percentile(m, 50)) for m in ms],
            [float(np.percentile(m, 99)) for m in ms],
        )
    return out


def latency_figure(metrics: Metrics, window: float) -> Any:
    """p50 and p99 latency of /recommend and /events over the last ``window`` seconds."""
    plt = _pyplot()
    now = time.time()
    trace = [(t, r, s) for t, r, s in metrics.recent() if now - t <= window]
    span = min(window, now - min(t for t, _, _ in trace)) if trace else window
    size = max(1.0, _bucket(span) / 6) if span < 600 else _bucket(span)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for route, (starts, p50, p99) in latency_series(trace, size).items():
        ax.plot(_when(starts), p50, marker=".", label=f"{route} p50")
        ax.plot(_when(starts), p99, marker=".", linestyle="--", label=f"{route} p99")
    if not trace:
        ax.text(0.5, 0.5, "no requests yet", ha="center", va="center")
    else:
        ax.legend(fontsize=8)
        _time_axis(ax, span)
    ax.set_title("Latency (ms)")
    ax.set_ylabel("ms")
    return fig


def _render(make: Any, *args: Any) -> Response:
    plt = _pyplot()
    with PLOT_LOCK:
        fig = make(*args)
        try:
            return _png(fig)
        finally:
            plt.close(fig)


def evaluation_table(evaluation: Path | None) -> dict[str, Any]:
    """Test metrics per strategy from a ``promptrec evaluate --output`` JSON."""
    if evaluation is None or not evaluation.exists():
        return {"dataset": None, "rows": []}
    report = json.loads(evaluation.read_text())
    split = report["splits"].get("test") or next(iter(report["splits"].values()))
    rows = [
        {
            "strategy": name,
            **{m: res.get(m) for m in ("NDCG@10", "Recall@10", "MRR@10", "Coverage@10")},
        }
        for name, res in split["results"].items()
    ]
    rows.sort(key=lambda r: -(r["NDCG@10"] or 0))
    return {"dataset": report.get("dataset"), "split": "test", "rows": rows}


def mount(
    app: FastAPI,
    engine: Engine,
    metrics: Metrics,
    read: Depends,
    evaluation: Path | None,
    errors: dict[int | str, dict[str, Any]],
) -> None:
    static = Path(__file__).parent / "static"
    png = {200: {"content": {"image/png": {}}}, **errors}

    @app.get("/dashboard", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(static / "dashboard.html")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = static / name
        if path.parent != static or not path.is_file():
            from fastapi import HTTPException

            raise HTTPException(404, f"no such file: {name}")
        return FileResponse(path)

    @app.get("/dashboard/ctr.png", dependencies=[read], response_class=Response, responses=png)
    def ctr(
        window: float = Query(86400.0, gt=0, le=366 * 86400.0, allow_inf_nan=False),
    ) -> Response:
        return _render(ctr_figure, engine, window)

    @app.get("/dashboard/latency.png", dependencies=[read], response_class=Response, responses=png)
    def latency(
        window: float = Query(3600.0, gt=0, le=366 * 86400.0, allow_inf_nan=False),
    ) -> Response:
        return _render(latency_figure, metrics, window)

    @app.get("/dashboard/online", dependencies=[read], responses=errors)
    def online() -> dict[str, Any]:
        return {"arms": engine.impressions.online_stats()}

    @app.get("/dashboard/evaluation", dependencies=[read], responses=errors)
    def offline() -> dict[str, Any]:
        return evaluation_table(evaluation)
