"""The daily monitoring report: one day's drift and outcomes, as HTML with plots and as a summary.

Under the reports folder (`$TOWERFLOW_HOME/reports/monitoring/`):

- `<day>.html`: self-contained (the plots are inline PNGs): PSI per feature and per ranking
  version's scores with the thresholds, each distribution against its reference, PSI over the
  last reports, CTR and conversion per model version and over the last reports;
- `<day>.json`: the same numbers, which `monitoring.exporter` serves to Prometheus.

A rerun for a day rewrites both (a day's outcomes grow until its attribution window has passed).
Latency, errors and feature freshness are Prometheus' (deploy/prometheus/alerts.yml, Grafana).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring import SUMMARY_FILE
from monitoring.drift import SCORES, Drift, Thresholds, Window, day_drift, resolve_reference
from monitoring.outcomes import Outcome, day_outcomes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from towerflow.lake import Lake

#: Earlier reports the trends show.
HISTORY = 14
COLORS = {"ok": "#4c9a2a", "warn": "#e0a100", "alert": "#c0392b", "unknown": "#999999"}


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    summary: Path


# ------------------------------------------------------------------------------------------------
# The summary: pure.


def label_of(row: Drift) -> str:
    """How a drift row is named in the report: `table.feature`, or the scores of a version."""
    if row.table == SCORES:
        return f"score (ranking {row.model_version})"
    return f"{row.table}.{row.feature}"


def path_totals(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """CTR and conversion per served path, over every version (for trends across versions)."""
    totals: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        t = totals.setdefault(o.path, {"path": o.path, "impressions": 0, "clicked_impressions": 0})
        t["impressions"] += o.impressions
        t["clicked_impressions"] += o.clicked_impressions
    for t in totals.values():
        t["ctr"] = t["clicked_impressions"] / t["impressions"] if t["impressions"] else None
    return sorted(totals.values(), key=lambda t: -t["impressions"])


def build_summary(
    day: date,
    reference: Window,
    thresholds: Thresholds,
    drift: Sequence[Drift],
    outcomes: Sequence[Outcome],
    attribution: Mapping[str, int],
    generated_at: datetime,
) -> dict[str, Any]:
    """The report's numbers as one JSON-ready dict (what `<day>.json` holds)."""
    flagged = [d for d in drift if d.level in ("warn", "alert")]
    return {
        "day": day.isoformat(),
        "generated_at": generated_at.isoformat(),
        "thresholds": {"warn": thresholds.warn, "alert": thresholds.alert},
        "reference": {
            "first": reference.first.isoformat(),
            "last": reference.last.isoformat(),
            "source": reference.source,
        },
        "drift": [d.as_dict() for d in drift],
        "flagged": [
            {"label": label_of(d), "table": d.table, "feature": d.feature, "psi": d.psi, "level": d.level}
            for d in sorted(flagged, key=lambda d: -(d.psi or 0.0))
        ],
        "outcomes": [o.as_dict() for o in outcomes],
        "paths": path_totals(outcomes),
        "attribution": dict(attribution),
    }


def previous_summaries(folder: Path, day: date, limit: int = HISTORY) -> list[dict[str, Any]]:
    """The summaries of the `limit` latest days before `day` in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    before = f"{day.isoformat()}.json"
    names = sorted(p.name for p in folder.iterdir() if SUMMARY_FILE.match(p.name) and p.name < before)
    out = []
    for name in names[-limit:]:
        try:
            out.append(json.loads((folder / name).read_text()))
        except (OSError, ValueError):
            continue
    return out


# ------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API: no pyplot state, no display).


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=90, layout="constrained")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def psi_bars(drift: Sequence[Drift], thresholds: Thresholds) -> str | None:
    """PSI of each feature and score, coloured by level, with the thresholds."""
    rows = [d for d in drift if d.psi is not None]
    if not rows:
        return None
    fig = _figure(9, 0.3 * len(rows) + 1.2)
    ax = fig.add_subplot()
    ys = range(len(rows))
    ax.barh(list(ys), [d.psi or 0.0 for d in rows], color=[COLORS[d.level] for d in rows])
    ax.set_yticks(list(ys), [label_of(d) for d in rows], fontsize=8)
    ax.invert_yaxis()
    for value, name in ((thresholds.warn, "warn"), (thresholds.alert, "alert")):
        ax.axvline(value, color=COLORS[name], linestyle="--", linewidth=1, label=f"{name} {value:g}")
    ax.set_xlabel("PSI (day vs reference)")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def distributions(drift: Sequence[Drift], columns: int = 4) -> str | None:
    """Each feature's binned shares: reference vs the day."""
    rows = [d for d in drift if d.psi is not None]
    if not rows:
        return None
    lines = -(-len(rows) // columns)
    fig = _figure(3.2 * columns, 2.4 * lines)
    for n, d in enumerate(rows):
        ax = fig.add_subplot(lines, columns, n + 1)
        xs = range(len(d.bins))
        ax.bar([x - 0.2 for x in xs], d.reference_shares, width=0.4, color="#7f8c8d", label="reference")
        ax.bar([x + 0.2 for x in xs], d.shares, width=0.4, color=COLORS[d.level], label="day")
        psi = "n/a" if d.psi is None else f"{d.psi:.3f}"
        ax.set_title(f"{label_of(d)}  PSI {psi}", fontsize=8)
        ax.set_xticks(list(xs), [b if len(b) <= 12 else b[:11] + "…" for b in d.bins], rotation=60, fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
        if n == 0:
            ax.legend(fontsize=6)
    return _png(fig)


def psi_trend(summaries: Sequence[Mapping[str, Any]], thresholds: Thresholds) -> str | None:
    """PSI of each feature over the reports (scores excluded: versions come and go)."""
    series: dict[str, list[tuple[date, float]]] = {}
    for summary in summaries:
        day = date.fromisoformat(summary["day"])
        for row in summary.get("drift", []):
            if row["table"] != SCORES and row.get("psi") is not None:
                series.setdefault(f"{row['table']}.{row['feature']}", []).append((day, row["psi"]))
    if len(summaries) < 2 or not series:
        return None
    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    for name, points in sorted(series.items()):
        ax.plot(_days(points), [p[1] for p in points], marker=".", linewidth=1, label=name)
    for value, level in ((thresholds.warn, "warn"), (thresholds.alert, "alert")):
        ax.axhline(value, color=COLORS[level], linestyle="--", linewidth=1)
    ax.set_ylabel("PSI")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def outcome_bars(outcomes: Sequence[Outcome]) -> str | None:
    """CTR and conversion per path and model version."""
    rows = [o for o in outcomes if o.impressions]
    if not rows:
        return None
    fig = _figure(9, 0.35 * len(rows) + 1.4)
    names = [_version_label(o) for o in rows]
    for n, (metric, title) in enumerate((("ctr", "CTR"), ("conversion", "conversion"))):
        ax = fig.add_subplot(1, 2, n + 1)
        ax.barh(range(len(rows)), [getattr(o, metric) or 0.0 for o in rows], color="#2e86c1")
        ax.set_yticks(range(len(rows)), names if n == 0 else [""] * len(rows), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
    return _png(fig)


def ctr_trend(summaries: Sequence[Mapping[str, Any]]) -> str | None:
    """CTR per served path over the reports."""
    series: dict[str, list[tuple[date, float]]] = {}
    for summary in summaries:
        day = date.fromisoformat(summary["day"])
        for row in summary.get("paths", []):
            if row.get("ctr") is not None:
                series.setdefault(row["path"], []).append((day, row["ctr"]))
    if len(summaries) < 2 or not series:
        return None
    fig = _figure(9, 3)
    ax = fig.add_subplot()
    for path, points in sorted(series.items()):
        ax.plot(_days(points), [p[1] for p in points], marker="o", linewidth=1, label=path)
    ax.set_ylabel("CTR")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=7)
    return _png(fig)


def _days(points: Sequence[tuple[date, float]]) -> np.ndarray:
    return np.array([p[0] for p in points], dtype="datetime64[D]")


def _version_label(o: Outcome | Mapping[str, Any]) -> str:
    row = o.as_dict() if isinstance(o, Outcome) else o
    if not row["retrieval_version"] and not row["ranking_version"]:
        return row["path"]
    return f"{row['path']} r{row['retrieval_version'] or '-'} / k{row['ranking_version'] or '-'}"


# ------------------------------------------------------------------------------------------------
# HTML.

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #4c9a2a; } .warn { color: #b07d00; font-weight: bold; } .alert { color: #c0392b; font-weight: bold; }
.unknown { color: #999; } .box { background: #f6f6f6; padding: 0.6em 1em; border-radius: 4px; }
img { max-width: 100%; }
"""


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _img(uri: str | None, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{uri}">' if uri else "<p><i>Nothing to plot yet.</i></p>"


def render_html(summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    """The report page of `summary`, with trends over `history` (earlier summaries) and it."""
    e = html.escape
    thresholds = Thresholds(**summary["thresholds"])
    drift = [Drift.from_dict(row) for row in summary["drift"]]
    outcomes = [Outcome(**row) for row in summary["outcomes"]]
    flagged = summary["flagged"]
    alerts = sum(1 for f in flagged if f["level"] == "alert")
    warns = len(flagged) - alerts
    unknown = sum(1 for d in drift if d.level == "unknown")
    verdict = (
        f'<span class="alert">{alerts} alert(s)</span>'
        if alerts
        else f'<span class="warn">{warns} warning(s)</span>'
        if warns
        else '<span class="unknown">nothing to compare</span>'
        if unknown == len(drift)
        else '<span class="ok">no drift</span>'
    )
    if unknown and unknown < len(drift):
        verdict += f' <span class="unknown">({unknown} without a reference or rows)</span>'

    ref = summary["reference"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>towerflow monitoring {e(summary['day'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>towerflow monitoring: {e(summary['day'])}</h1>",
        '<div class="box">',
        f"<p><b>Drift:</b> {verdict}"
        + ("".join(f" · <span class='{e(f['level'])}'>{e(f['label'])} {_fmt(f['psi'], 3)}</span>" for f in flagged))
        + "</p>",
        f"<p><b>Reference:</b> {e(ref['first'])} .. {e(ref['last'])}: {e(ref['source'])}.<br>"
        f"<b>Thresholds:</b> PSI ≥ {thresholds.warn:g} warn, ≥ {thresholds.alert:g} alert. "
        f"<b>Generated:</b> {e(summary['generated_at'])}.</p>",
        "<p>Latency, errors, the served paths and feature freshness are in Prometheus and Grafana "
        "(alert rules: deploy/prometheus/alerts.yml). docs/monitoring.md says what each number means.</p>",
        "</div>",
        "<h2>Drift: population stability index</h2>",
        _img(psi_bars(drift, thresholds), "PSI per feature"),
        "<table><tr><th>feature</th><th>PSI</th><th>level</th><th>reference rows</th><th>day rows</th>"
        "<th>reference</th></tr>",
        *(
            f"<tr><td>{e(label_of(d))}</td><td>{_fmt(d.psi)}</td><td class='{d.level}'>{d.level}</td>"
            f"<td>{d.reference_rows:,}</td><td>{d.rows:,}</td><td>{e(d.reference)}</td></tr>"
            for d in drift
        ),
        "</table>",
        "<h2>Distributions: reference vs day</h2>",
        _img(distributions(drift), "distributions"),
        "<h2>Drift over the last reports</h2>",
        _img(psi_trend([*history, summary], thresholds), "PSI over time"),
        "<h2>Outcomes per model version</h2>",
        "<p>Clicks and purchases attributed to the day's impressions (by request id, else the user's "
        "latest impression of the item within 24 h); CTR = clicked impressions / impressions, "
        "conversion = responses with a purchase / responses.</p>",
        _img(outcome_bars(outcomes), "CTR and conversion per version"),
        "<table><tr><th>path / retrieval / ranking</th><th>impressions</th><th>responses</th><th>clicks</th>"
        "<th>CTR</th><th>purchases</th><th>conversion</th></tr>",
        *(
            f"<tr><td>{e(_version_label(o))}</td><td>{o.impressions:,}</td><td>{o.responses:,}</td>"
            f"<td>{o.clicks:,}</td><td>{_fmt(o.ctr)}</td><td>{o.purchases:,}</td><td>{_fmt(o.conversion)}</td></tr>"
            for o in outcomes
        ),
        "</table>",
        "<p>Attribution: " + ", ".join(f"{e(k)} {v:,}" for k, v in summary.get("attribution", {}).items()) + ".</p>",
        "<h2>CTR over the last reports</h2>",
        _img(ctr_trend([*history, summary]), "CTR over time"),
        "</body></html>",
    ]
    return "\n".join(parts)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a gateway running as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(folder: Path, summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> ReportPaths:
    """Write `<day>.html`, then `<day>.json` (each replaced atomically; the summary last, so the
    exporter never points at a report whose page is missing)."""
    paths = ReportPaths(folder / f"{summary['day']}.html", folder / f"{summary['day']}.json")
    _write_atomically(paths.html, render_html(summary, history))
    _write_atomically(paths.summary, json.dumps(summary, indent=1))
    return paths


# ------------------------------------------------------------------------------------------------
# From the lake.


def monitor_day(
    lake: Lake,
    models_dir: Path | None,
    day: date,
    folder: Path,
    *,
    thresholds: Thresholds,
    reference_days: int = 7,
    reference: Window | None = None,
    generated_at: datetime | None = None,
) -> tuple[ReportPaths, dict[str, Any]]:
    """Measure `day` and write its report into `folder`.

    Args:
        lake: the lake (gold features, bronze impressions and events).
        models_dir: the model registry, for what the serving model was trained on; None: the
            reference is the days before `day`.
        day: the day reported.
        folder: where the reports are.
        thresholds: PSI levels.
        reference_days: length of the reference window (and of the scores' one).
        reference: this window instead of `resolve_reference`'s.
        generated_at: the report's stamp (default now).

    Returns:
        The files written and the summary.
    """
    reference = reference or resolve_reference(lake, models_dir, day, reference_days)
    drift = day_drift(lake, day, reference, thresholds, score_days=reference_days)
    outcomes, attribution = day_outcomes(lake, day)
    counts = {
        "considered": attribution.considered,
        "by_request_id": attribution.by_request_id,
        "by_window": attribution.by_window,
        "unattributed": attribution.unattributed,
    }
    summary = build_summary(
        day, reference, thresholds, drift, outcomes, counts, generated_at or datetime.now(UTC).replace(microsecond=0)
    )
    paths = write_report(folder, summary, previous_summaries(folder, day))
    return paths, summary


def report_task(run_date: str) -> dict[str, Any]:
    """The daily run's monitoring step: report the day before `run_date` (the last day the run
    processed), with the environment's settings. Returns a small summary for the XCom."""
    from towerflow.lake import Lake
    from towerflow.settings import get_settings

    settings = get_settings()
    day = date.fromisoformat(run_date) - timedelta(days=1)
    paths, summary = monitor_day(
        Lake(settings.lake, settings.storage_options or None),
        settings.models_dir,
        day,
        settings.monitoring_reports_dir,
        thresholds=Thresholds(settings.drift_warn_psi, settings.drift_alert_psi),
        reference_days=settings.drift_reference_days,
    )
    return {
        "day": summary["day"],
        "report": str(paths.html),
        "flagged": {f["label"]: f["level"] for f in summary["flagged"]},
        "ctr": {p["path"]: p["ctr"] for p in summary["paths"]},
    }
