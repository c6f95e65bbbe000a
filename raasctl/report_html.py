"""`runs report --html`: one self-contained page for a run's report.

Nothing outside the page is referenced (no script, style sheet, font or image to fetch), so
it opens the same from a mail attachment, a CI artifact or a laptop offline: the styles are
inline, the charts inline SVG that scale with the window (`viewBox`, width 100 %), and
`@media print` keeps every chart on paper. Charts: throughput over time (succeeded, failed,
retries and dead-lettered stacked), sink latency percentiles over time, workers over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from raasctl.runstats import RunReport, Second, merge, percentile

MAX_BINS = 120  # a long run's seconds are grouped so that bars stay readable
WIDTH, HEIGHT = 800, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28  # plot margins inside the SVG

THROUGHPUT_SERIES = (
    ("succeeded", "#2e7d32"),
    ("failed", "#c62828"),
    ("retries", "#f9a825"),
    ("dead_lettered", "#6a1b9a"),
)
LATENCY_SERIES = (("p50", "#1565c0"), ("p90", "#ef6c00"), ("p99", "#c62828"))

STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0 auto; padding: 16px; max-width: 980px; color: #1b1f24; background: #fff; }
h1 { font-size: 1.35rem; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 1.05rem; margin: 24px 0 6px; }
.sub { color: #57606a; margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 8px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px; }
.card b { display: block; font-size: 1.2rem; }
.card span { color: #57606a; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #d0d7de; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: #57606a; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: .85rem; margin: 4px 0; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  border-radius: 2px; vertical-align: -1px; }
.empty { color: #57606a; font-style: italic; }
/* The charts scale with the window; their labels must not shrink out of reading. */
@media (max-width: 600px) { svg text { font-size: 22px; } .legend { font-size: .8rem; } }
@media print {
  body { max-width: none; padding: 0; font-size: 12px; }
  section { break-inside: avoid; }
}
"""


@dataclass(frozen=True)
class Bin:
    start: int  # seconds from the run's first
    seconds: int  # how many seconds it groups
    counts: dict[str, float]  # per second, averaged over the bin
    latency: dict[str, float | None]
    workers: float


ValueOf = Callable[[Bin], float | None]


def render_html(report: RunReport) -> str:
    run = report.run
    bins = _bins(report.timeline)
    sections = [
        _summary(report),
        _section(
            "Throughput (messages per second)",
            _legend(THROUGHPUT_SERIES),
            _stacked_chart(bins),
        ),
        _section(
            "Sink latency over time (ms)",
            _legend(LATENCY_SERIES),
            _line_chart(bins, [(name, color, _latency(name)) for name, color in LATENCY_SERIES]),
        ),
        _section(
            "Workers over time",
            "",
            _line_chart(bins, [("workers", "#455a64", lambda b: b.workers)], step=True),
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>raasctl run report {escape(run.run_id)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Run {escape(run.run_id)}</h1>"
        f'<p class="sub">{escape(run.cron)} in {escape(run.env)}'
        f"{' (mock)' if run.mock else ''}: {escape(run.status)}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


# ---------------------------------------------------------------- summary


def _summary(report: RunReport) -> str:
    run = report.run
    latency = report.latency_ms
    cards = [
        ("messages", f"{run.done:,}" + (f" / {run.total:,}" if run.total is not None else "")),
        ("per second", _number(report.per_second)),
        ("per hour", _number(report.per_hour, 0)),
        ("bound per second", _number(report.bound_per_second)),
        ("of the bound", "-" if report.of_bound is None else f"{report.of_bound:.0%}"),
        ("p50 latency", _ms(latency.get("p50"))),
    ]
    rows = [
        ("status", run.status),
        ("succeeded", f"{run.succeeded:,}"),
        ("failed", f"{run.failed:,}"),
        ("dead-lettered", f"{run.dead_lettered:,}"),
        ("superseded", f"{run.superseded:,}"),
        ("retries", f"{run.retries:,}"),
        ("wall time", "-" if report.elapsed_s is None else f"{report.elapsed_s:,.1f} s"),
        ("concurrency (all workers)", str(report.concurrency or "-")),
        ("rate limit", "unlimited" if report.rate_limit is None else f"{report.rate_limit:g}/s"),
        ("sink calls", f"{report.sink_calls:,}"),
        *((f"latency {name}", _ms(value)) for name, value in latency.items()),
    ]
    card_html = "".join(
        f'<div class="card"><b>{escape(value)}</b><span>{escape(name)}</span></div>'
        for name, value in cards
    )
    table = "".join(
        f'<tr><th scope="row">{escape(name)}</th><td class="n">{escape(value)}</td></tr>'
        for name, value in rows
    )
    return (
        f'<section><div class="cards">{card_html}</div>'
        f"<h2>Summary</h2><table>{table}</table></section>"
    )


def _section(title: str, legend: str, chart: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{legend}{chart}</section>"


def _legend(series: Sequence[tuple[str, str]]) -> str:
    items = "".join(
        f'<span><i style="background:{color}"></i>{escape(name.replace("_", " "))}</span>'
        for name, color in series
    )
    return f'<div class="legend">{items}</div>'


# ---------------------------------------------------------------- charts


def _bins(timeline: Sequence[Second]) -> list[Bin]:
    size = max(1, math.ceil(len(timeline) / MAX_BINS))
    bins = []
    for start in range(0, len(timeline), size):
        group = timeline[start : start + size]
        histogram = merge(second.latency for second in group)
        bins.append(
            Bin(
                start=group[0].t,
                seconds=len(group),
                counts={
                    name: sum(getattr(second, name) for second in group) / len(group)
                    for name, _ in THROUGHPUT_SERIES
                },
                latency={f"p{q}": percentile(histogram, q) for q in (50, 90, 99)},
                workers=max(second.workers for second in group),
            )
        )
    return bins


def _latency(name: str) -> ValueOf:
    return lambda b: b.latency[name]


def _stacked_chart(bins: Sequence[Bin]) -> str:
    if not bins:
        return '<p class="empty">No statistics were recorded for this run.</p>'
    top = _nice(max(sum(b.counts.values()) for b in bins))
    width = (WIDTH - LEFT - RIGHT) / len(bins)
    bars = []
    for index, b in enumerate(bins):
        base = 0.0
        for name, color in THROUGHPUT_SERIES:
            value = b.counts[name]
            if value <= 0:
                continue
            y, height = _y(base + value, top), _y(base, top) - _y(base + value, top)
            bars.append(
                f'<rect x="{LEFT + index * width:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}"'
                f' height="{height:.1f}" fill="{color}"><title>{b.start}s {name}:'
                f" {value:.1f}/s</title></rect>"
            )
            base += value
    return _svg(bins, top, "".join(bars), "Throughput over time")


def _line_chart(
    bins: Sequence[Bin], series: Sequence[tuple[str, str, ValueOf]], *, step: bool = False
) -> str:
    if not bins:
        return '<p class="empty">No statistics were recorded for this run.</p>'
    values = [v for _, _, value_of in series for b in bins if (v := value_of(b)) is not None]
    if not values:
        return '<p class="empty">No sink calls were recorded for this run.</p>'
    top = _nice(max(values))
    width = (WIDTH - LEFT - RIGHT) / len(bins)
    lines = []
    for name, color, value_of in series:
        points = []
        for index, b in enumerate(bins):
            value = value_of(b)
            if value is None:
                continue
            x0, x1 = LEFT + index * width, LEFT + (index + 1) * width
            y = _y(value, top)
            points.extend([(x0, y), (x1, y)] if step else [((x0 + x1) / 2, y)])
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        lines.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{escape(name)}</title></polyline>"
        )
    return _svg(bins, top, "".join(lines), "Over time")


def _svg(bins: Sequence[Bin], top: float, body: str, label: str) -> str:
    bottom = HEIGHT - BOTTOM
    grid = []
    for fraction in (0, 0.5, 1):
        y = _y(top * fraction, top)
        grid.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(top * fraction)}</text>'
        )
    end = bins[-1].start + bins[-1].seconds
    ticks = "".join(
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) * f:.1f}" y="{bottom + 18}"'
        f' text-anchor="{anchor}">{_duration(end * f)}</text>'
        for f, anchor in ((0, "start"), (0.5, "middle"), (1, "end"))
    )
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}"'
        f">{''.join(grid)}{body}{ticks}</svg>"
    )


def _y(value: float, top: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / top)


def _nice(value: float) -> float:
    """A round axis maximum at or above `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:.2g}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"
