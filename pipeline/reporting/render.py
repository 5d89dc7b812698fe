"""A comparison as a report, in Markdown or as one self-contained HTML page.

Both renderers walk the same outline (`_outline`), so the two formats never say different
things.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html import escape

import pandas as pd
from matplotlib.figure import Figure

from pipeline.names import Metric
from pipeline.reporting.comparison import RANK_WHY, Comparison


@dataclass(frozen=True)
class _Title:
    text: str


@dataclass(frozen=True)
class _Heading:
    text: str


@dataclass(frozen=True)
class _Text:
    text: str  # `code` spans in backticks


@dataclass(frozen=True)
class _Best:
    run_id: str
    label: str
    valid_accuracy: float
    test_accuracy: float


@dataclass(frozen=True)
class _Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class _Image:
    name: str
    link: str


_Block = _Title | _Heading | _Text | _Best | _Table | _Image


SHORT_ID = 8  # a run id's first characters: enough to find it, short enough to fit


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """A comparison's table as the report shows it: the settings and results first (what a
    reader compares, on screen in the UI's artifact view), then the run's name, status and
    a short run id (`SHORT_ID` characters) last."""
    last = [c for c in ("run_name", "status") if c in table]
    first = [c for c in table.columns if c not in ("run_id", *last)]
    shown = table[[*first, *last]].copy()
    shown["run"] = table["run_id"].astype(str).str[:SHORT_ID]
    return shown


def report_title(name: str, comparison: Comparison) -> str:
    """A report's title: the run's name (`sweep 2026-12-06 21:00:01`, `study default`) with
    its first letter up, and what the runs vary; never the kind twice ("Sweep sweep")."""
    varied = ", ".join(comparison.varied[:3]) + (", ..." if len(comparison.varied) > 3 else "")
    runs = f"{len(comparison.table)} runs"
    return f"{name[:1].upper()}{name[1:]}: {runs}" + (f" over {varied}" if varied else "")


def _outline(comparison: Comparison, images: Mapping[str, str], title: str) -> Iterator[_Block]:
    from pipeline.reporting.figures import image_caption

    total, failed = len(comparison.table), len(comparison.failures)
    yield _Title(title)
    yield _Text(f"{total} runs, {total - failed} finished, {failed} failed; {RANK_WHY}.")
    best = comparison.best
    if best is not None:
        yield _Best(
            str(best["run_id"]),
            comparison.label(best),
            float(best[Metric.BEST_VAL_ACCURACY]),
            float(best[Metric.TEST_ACCURACY]),
        )
    yield _Heading("Runs")
    yield _Table(shown_table(comparison.table))
    if failed:
        yield _Heading("Failed runs")
        yield _Table(shown_table(comparison.failures))
    for name, link in images.items():
        yield _Heading(name.replace("_", " ").capitalize())
        yield _Image(name, link)
        caption = image_caption(comparison) if name == "heatmap" else None
        if caption:
            yield _Text(caption)


def markdown(comparison: Comparison, images: Mapping[str, str], title: str) -> str:
    """The report as Markdown; `images` maps figure names to their links (paths or data URIs)."""
    lines: list[str] = []
    for block in _outline(comparison, images, title):
        match block:
            case _Title(text):
                lines += [f"# {text}"]
            case _Heading(text):
                lines += ["", f"## {text}"]
            case _Text(text):
                lines += ["", text]
            case _Best(run_id, label, valid, test):
                lines += [
                    "",
                    f"**Best**: {label}: valid accuracy {valid:.4f}, test accuracy {test:.4f} "
                    f"(run `{run_id[:SHORT_ID]}`).",
                ]
            case _Table(frame):
                lines += ["", frame.to_markdown(index=False, floatfmt=".4g")]
            case _Image(name, link):
                lines += ["", f"![{name}]({link})"]
    return "\n".join(lines) + "\n"


_STYLE = (
    "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
    "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}</style>"
)


def html(comparison: Comparison, images: Mapping[str, str], title: str) -> str:
    """The same report as one self-contained HTML page (give images as data URIs)."""
    parts = ["<!doctype html><meta charset='utf-8'>", f"<title>{escape(title)}</title>", _STYLE]
    for block in _outline(comparison, images, title):
        match block:
            case _Title(text):
                parts.append(f"<h1>{escape(text)}</h1>")
            case _Heading(text):
                parts.append(f"<h2>{escape(text)}</h2>")
            case _Text(text):
                pieces = escape(text).split("`")
                parts.append(
                    "<p>"
                    + "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
                    + "</p>"
                )
            case _Best(run_id, label, valid, test):
                parts.append(
                    f"<p><b>Best</b>: {escape(label)}: valid accuracy {valid:.4f}, test "
                    f"accuracy {test:.4f} (run <code>{escape(run_id[:SHORT_ID])}</code>).</p>"
                )
            case _Table(frame):
                parts.append(frame.to_html(index=False, float_format="%.4g"))
            case _Image(name, link):
                parts.append(f"<img alt='{escape(name)}' src='{link}'>")
    return "\n".join(parts)


def data_uri(fig: Figure) -> str:
    """A figure as a PNG data URI, for a report that must stand alone."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
