"""The dashboard: online CTR per arm over time, latency over time, the offline evaluation table.

Plots are matplotlib PNGs rendered on request (``/dashboard/ctr.png``, ``/dashboard/latency.png``);
the page ``/dashboard`` shows them beside the table from ``/dashboard/evaluation``.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Response
from fastapi.params import Depends
from fastapi.responses import FileResponse

from promptrec.service.engine import Engine
from promptrec.service.metrics import Metrics

_PLOT_LOCK = threading.Lock()  # pyplot's state is global


def _bucket(span: float) -> float:
    """A time bucket giving at most about 60 points over ``span`` seconds."""
    for size in (10, 30, 60, 300, 900, 3600, 4 * 3600, 86400):
        if span / size <= 60:
            return float(size)
    return 7 * 86400.0


def _png(figure: Any) -> Response:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return Response(buffer.getvalue(), media_type="image/png")


def ctr_plot(engine: Engine, window: float) -> Response:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engine.impressions.flush()
    rows = engine.store.online_stats(bucket_seconds=_bucket(window))
    since = time.time() - window
    with _PLOT_LOCK:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        arms = sorted({(r["arm"], r["model_version"]) for r in rows})
        for arm, version in arms:
            mine = [r for r in rows if (r["arm"], r["model_version"]) == (arm, version)]
            mine = [r for r in mine if r["bucket"] >= since]
            if mine:
                t = [time.strftime("%H:%M", time.localtime(r["bucket"])) for r in mine]
                ax.plot(t, [r["ctr"] for r in mine], marker="o", label=f"{arm} ({version})")
        if not arms:
            ax.text(0.5, 0.5, "no lists served yet", ha="center", va="center")
        ax.set_title("Online CTR per arm (share of served lists clicked)")
        ax.set_ylabel("CTR")
        ax.set_ylim(bottom=0)
        if arms:
            ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        response = _png(fig)
        plt.close(fig)
    return response


def latency_plot(metrics: Metrics, window: float) -> Response:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    now = time.time()
    trace = [(t, r, s) for t, r, s in metrics.recent() if now - t <= window]
    size = _bucket(min(window, now - trace[0][0]) if trace else window)
    with _PLOT_LOCK:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for route in sorted({r for _, r, _ in trace if r in ("/recommend", "/events")}):
            points = np.array([(t, s) for t, r, s in trace if r == route])
            buckets = (points[:, 0] // size) * size
            xs, p50, p99 = [], [], []
            for b in np.unique(buckets):
                sel = points[buckets == b, 1] * 1000
                xs.append(time.strftime("%H:%M:%S", time.localtime(b)))
                p50.append(np.percentile(sel, 50))
                p99.append(np.percentile(sel, 99))
            ax.plot(xs, p50, marker=".", label=f"{route} p50")
            ax.plot(xs, p99, marker=".", linestyle="--", label=f"{route} p99")
        if not trace:
            ax.text(0.5, 0.5, "no requests yet", ha="center", va="center")
        else:
            ax.legend(fontsize=8)
        ax.set_title("Latency (ms)")
        ax.set_ylabel("ms")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        response = _png(fig)
        plt.close(fig)
    return response


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
    app: FastAPI, engine: Engine, metrics: Metrics, read: Depends, evaluation: Path | None
) -> None:
    static = Path(__file__).parent / "static"

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

    @app.get("/dashboard/ctr.png", dependencies=[read], response_class=Response)
    def ctr(window: float = Query(86400.0, gt=0)) -> Response:
        return ctr_plot(engine, window)

    @app.get("/dashboard/latency.png", dependencies=[read], response_class=Response)
    def latency(window: float = Query(3600.0, gt=0)) -> Response:
        return latency_plot(metrics, window)

    @app.get("/dashboard/online", dependencies=[read])
    def online() -> dict[str, Any]:
        engine.impressions.flush()
        return {"arms": engine.store.online_stats()}

    @app.get("/dashboard/evaluation", dependencies=[read])
    def offline() -> dict[str, Any]:
        return evaluation_table(evaluation)
