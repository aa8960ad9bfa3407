"""The demo's static HTML report: the Grafana dashboards' own queries, run against the
local Prometheus over the demo's time window, drawn with matplotlib (PNG, base64-embedded).

    render_report(prometheus_url, start, end, specs, out_dir, summary_rows, stage_rows)

Panels come from `workloads.monitoring.dashboards` (platform overview, the per-model
dashboard once per model, streaming), so the report and the dashboards can never show
different expressions. Grafana's `$__rate_interval` becomes `rate_window` (the scrape
interval is 5 s locally) and `$model` the model. A panel whose queries return nothing in
the window is listed, not drawn.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

RATE_WINDOW = "30s"
MAX_POINTS = 240


@dataclass
class Panel:
    dashboard: str
    title: str
    unit: str
    queries: list[tuple[str, str]]  # (expr, legend format)
    series: list[tuple[str, list[float], list[float]]] = field(default_factory=list)  # (legend, t, v)
    error: str = ""
    png: str = ""  # base64


def _substitute(expr: str, model: str | None, rate_window: str) -> str:
    expr = expr.replace("$__rate_interval", rate_window)
    if model is not None:
        expr = expr.replace("$model", model)
    return expr


def dashboard_panels(specs: Sequence[Any], rate_window: str = RATE_WINDOW) -> list[Panel]:
    """Every timeseries panel of the dashboards the demo exercises, queries substituted."""
    from workloads.monitoring import dashboards as dash

    panels: list[Panel] = []

    def add(name: str, board: dict, model: str | None) -> None:
        for p in board["panels"]:
            if p.get("type") != "timeseries":
                continue
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
            queries = [(_substitute(t["expr"], model, rate_window), t.get("legendFormat", "")) for t in p["targets"]]
            panels.append(Panel(name, p["title"], unit, queries))

    add("Platform overview", dash.platform_overview(specs), None)
    for spec in sorted(specs, key=lambda s: s.name):
        add(f"Model: {spec.name}", dash.model_dashboard(specs), spec.name)
    streaming = [s.name for s in specs if s.serving.streaming.enabled]
    if streaming:
        add("Streaming", dash.streaming_dashboard(specs), "|".join(sorted(streaming)))
    return panels


def query_range(prometheus_url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{params}", timeout=30) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error', body)}")
    return body["data"]["result"]


def _legend(fmt: str, labels: dict[str, str], expr: str) -> str:
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or expr[:40]
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or expr[:40]


def fill(panel: Panel, prometheus_url: str, start: float, end: float) -> Panel:
    step = max(1.0, (end - start) / MAX_POINTS)
    for expr, fmt in panel.queries:
        try:
            result = query_range(prometheus_url, expr, start, end, step)
        except Exception as error:  # noqa: BLE001 - a panel that fails is reported, not fatal
            panel.error = f"{type(error).__name__}: {error}"
            continue
        for series in result:
            points = [(float(t), float(v)) for t, v in series["values"] if math.isfinite(float(v))]
            if points:
                t, v = zip(*points)
                panel.series.append((_legend(fmt, series.get("metric", {}), expr), list(t), list(v)))
    return panel


def _with_gaps(t: list[float], v: list[float], step: float) -> tuple[list[float], list[float]]:
    """Break the line where samples are missing (a restarted server, a stopped slot)."""
    xs, ys = [], []
    for i, (x, y) in enumerate(zip(t, v)):
        if i and x - t[i - 1] > 2.5 * step:
            xs.append((x + t[i - 1]) / 2)
            ys.append(float("nan"))
        xs.append(x)
        ys.append(y)
    return xs, ys


def plot(panel: Panel, start: float, step: float = 1.0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=90)
    try:
        for legend, t, v in panel.series[:12]:
            t, v = _with_gaps(t, v, step)
            ax.plot([x - start for x in t], v, linewidth=1.2, label=legend[:40])
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("seconds since the demo started", fontsize=8)
        ax.set_ylabel(panel.unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if panel.series:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}.ok{color:#1a7f37}.fail{color:#c00}
.grid{display:flex;flex-wrap:wrap;gap:12px}.panel{border:1px solid #ddd;padding:6px}.panel code{font-size:11px;color:#555;
display:block;max-width:560px;overflow-wrap:anywhere}"""


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(prometheus_url: str, start: float, end: float, specs: Sequence[Any], out_dir: Path,
                  summary_rows: Sequence[tuple[str, str]], stage_rows: Sequence[tuple[str, bool, float, str]],
                  sections: Sequence[tuple[str, Sequence[tuple[str, str]]]] = ()) -> Path:
    """Write `<out_dir>/index.html`; returns its path. Stage rows: (stage, ok, seconds, detail);
    `sections`: (title, [(what, value)]) tables after the stages (e.g. the lake's figures)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [fill(p, prometheus_url, start, end) for p in dashboard_panels(specs)]
    drawn = [p for p in panels if p.series]
    step = max(1.0, (end - start) / MAX_POINTS)
    for p in drawn:
        p.png = plot(p, start, step)
    when = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Strata local demo</title><style>{_CSS}</style>"
             f"</head><body><h1>Strata local demo</h1><p>{html.escape(when)}, {end - start:.0f} s. Plots: the Grafana "
             "dashboards' queries (workloads/monitoring/dashboards.py) over the demo's window, from the local "
             f"Prometheus ({html.escape(prometheus_url)}).</p>"]
    parts.append("<h2>Summary</h2>" + _table([(html.escape(k), html.escape(v)) for k, v in summary_rows], ("what", "value")))
    parts.append("<h2>Stages</h2>" + _table(
        [(html.escape(name), f"<span class='{'ok' if ok else 'fail'}'>{'ok' if ok else 'FAILED'}</span>",
          f"{secs:.1f} s", html.escape(detail)) for name, ok, secs, detail in stage_rows],
        ("stage", "result", "time", "detail")))
    for title, rows in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>" + _table([(html.escape(str(k)), html.escape(str(v)))
                                                                  for k, v in rows], ("what", "value")))
    for board in dict.fromkeys(p.dashboard for p in panels):
        parts.append(f"<h2>{html.escape(board)}</h2><div class='grid'>")
        for p in (x for x in drawn if x.dashboard == board):
            exprs = "".join(f"<code>{html.escape(e)}</code>" for e, _ in p.queries)
            parts.append(f"<div class='panel'><img alt='{html.escape(p.title)}' src='data:image/png;base64,{p.png}'>{exprs}</div>")
        parts.append("</div>")
        empty = [p for p in panels if p.dashboard == board and not p.series]
        if empty:
            parts.append("<p>No data in the window: " + ", ".join(
                html.escape(p.title + (f" ({p.error})" if p.error else "")) for p in empty) + "</p>")
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts))
    (out_dir / "panels.json").write_text(json.dumps(
        [{"dashboard": p.dashboard, "title": p.title, "queries": [q for q, _ in p.queries], "series": len(p.series),
          "error": p.error} for p in panels], indent=2))
    return path
