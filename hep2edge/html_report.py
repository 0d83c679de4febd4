"""A single self-contained HTML page (images inlined as base64, charts as inline SVG).

Used by `hep2edge demo` so a person can look rather than read; needs no plotting library.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from hep2edge.atomic import atomic_write_text

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.ok{color:#080}.bad{color:#b00}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.gallery figure{margin:0;width:340px}
.gallery img{width:340px;border:1px solid #ccc}figcaption{font-size:.85em}
.charts{display:flex;flex-wrap:wrap;gap:16px}
"""


def image_data_uri(path: Path) -> str:
    """A PNG/JPEG file as a data: URI."""
    kind = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def line_chart_svg(title: str, series: Mapping[str, Sequence[float]], width: int = 340, height: int = 220) -> str:
    """An SVG line chart of one or more equally spaced series (x = index + 1)."""
    values = [v for s in series.values() for v in s if v == v]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    n = max(len(s) for s in series.values())
    left, right, top, bottom = 44, 10, 24, 30

    def xy(i: int, v: float) -> str:
        x = left + (width - left - right) * (i / max(n - 1, 1))
        y = top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{hi:.3g}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" font-size="10">{lo:.3g}</text>',
             f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" font-size="10">epoch (1-{n})</text>']
    for k, (name, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = " ".join(xy(i, v) for i, v in enumerate(s) if v == v)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 12 + 12 * k}" text-anchor="end" '
                     f'font-size="10" fill="{color}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def confusion_table(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """An HTML confusion matrix (rows true, columns predicted), cells shaded by row fraction."""
    rows = ['<table><tr><th class="l">true \\ predicted</th>'
            + "".join(f"<th>{html.escape(x)}</th>" for x in labels) + "</tr>"]
    for name, row in zip(labels, matrix):
        total = max(sum(row), 1)
        cells = []
        for j, count in enumerate(row):
            share = count / total
            colour = f"rgba(31,119,180,{share:.2f})"
            cls = ' style="font-weight:bold"' if j == list(labels).index(name) else ""
            cells.append(f'<td style="background:{colour}"{cls}>{count}</td>')
        rows.append(f'<tr><th class="l">{html.escape(name)}</th>{"".join(cells)}</tr>')
    rows.append("</table>")
    return "".join(rows)


class HtmlReport:
    """Collects sections and writes them as one self-contained page."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]], classes: Sequence[str] = ()) -> None:
        """A table; `classes` gives a CSS class per row (e.g. ok / bad) or nothing."""
        out = ["<table><tr>" + "".join(f'<th class="l">{html.escape(h)}</th>' for h in header) + "</tr>"]
        for i, row in enumerate(rows):
            cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
            out.append(f"<tr{cls}>" + "".join(f'<td class="l">{html.escape(str(c))}</td>' for c in row) + "</tr>")
        out.append("</table>")
        self.parts.append("".join(out))

    def gallery(self, images: Sequence[tuple[Path, str]]) -> None:
        figures = [f'<figure><img alt="{html.escape(cap)}" src="{image_data_uri(p)}"><figcaption>'
                   f"{html.escape(cap)}</figcaption></figure>" for p, cap in images]
        self.parts.append(f'<div class="gallery">{"".join(figures)}</div>')

    def charts(self, svgs: Sequence[str]) -> None:
        self.parts.append(f'<div class="charts">{"".join(s for s in svgs if s)}</div>')

    def raw(self, fragment: str) -> None:
        self.parts.append(fragment)

    def render(self) -> str:
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: Path) -> Path:
        atomic_write_text(path, self.render())
        return path
