"""A self-contained HTML page of text blocks and Plotly figures (plotly.js embedded once)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from studies.files import atomic_write_text

__all__ = ["Block", "definitions", "render_page", "section", "style", "table", "text_table", "write_page"]

Block = str | go.Figure  # raw HTML, or a figure drawn where it stands


def style(fig: go.Figure, **layout: Any) -> go.Figure:
    """Applies the pages' look (white template, tight margins), then ``layout``."""
    fig.update_layout(template="plotly_white", margin={"t": 36, "b": 50, "l": 70, "r": 30})
    return fig.update_layout(**layout)


def section(title: str, anchor: str, caption: str = "") -> str:
    """A section heading with an id (for links and tests) and a one-paragraph caption."""
    lead = f'<p class="caption">{caption}</p>' if caption else ""
    return f'<h2 id="{html.escape(anchor)}">{html.escape(title)}</h2>{lead}'


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    table_id: str = "",
    css: str = "data",
    row_css: Sequence[str] | None = None,
) -> str:
    """An HTML table; cells are escaped here, so pass plain text."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_css[i]}"' if row_css and row_css[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return f'<table class="{css}"{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table as plain text, for the terminal: the first column left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    return "\n".join(lines)


def definitions(items: Mapping[str, Any]) -> str:
    """A two-column key/value list."""
    rows = "".join(
        f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(str(value))}</dd>" for key, value in items.items()
    )
    return f'<dl class="facts">{rows}</dl>'


def render_page(title: str, blocks: Iterable[Block]) -> str:
    """Joins blocks into one HTML page; plotly.js goes inline with the first figure only."""
    parts, embedded = [], False
    for block in blocks:
        if isinstance(block, go.Figure):
            height = block.layout.height or 480
            parts.append(
                '<div class="figure">'
                + block.to_html(
                    full_html=False,
                    include_plotlyjs=not embedded,
                    default_height=f"{height}px",
                    config={"displaylogo": False, "responsive": True},
                )
                + "</div>"
            )
            embedded = True
        else:
            parts.append(block)
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__BODY__", "\n".join(parts))


def write_page(path: str | Path, title: str, blocks: Iterable[Block]) -> Path:
    """Writes :func:`render_page` to ``path``, creating missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_page(title, blocks))
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.subtitle { color: #555; margin-top: 0; }
.caption { color: #444; max-width: 60em; }
.summary { background: #f4f7fb; padding: 0.6em 1.2em; border-radius: 6px; border-left: 4px solid #1f77b4; }
.summary li { margin: 0.25em 0; }
.summary .headline { font-size: 1.15em; }
.empty { font-size: 1.2em; color: #a33; }
table.data { border-collapse: collapse; font-size: 0.88em; }
table.data th, table.data td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right;
                               font-variant-numeric: tabular-nums; }
table.data th { background: #fafafa; position: sticky; top: 0; }
table.data td.text, table.data th.text { text-align: left; }
table.data tr.winner td { background: #fff3d6; font-weight: 600; }
table.data tr.faded td { color: #888; }
table.leaderboard td:nth-child(3), table.leaderboard td:nth-child(4), table.leaderboard td:nth-child(9),
table.leaderboard th:nth-child(3), table.leaderboard th:nth-child(4), table.leaderboard th:nth-child(9) {
  text-align: left; }
table.compare { font-size: 0.8em; }
table.compare td:first-child, table.compare th:first-child,
table.config td:first-child, table.config th:first-child { text-align: left; }
table.config td:first-child { font-family: ui-monospace, monospace; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1.2em; font-size: 0.9em; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; font-family: ui-monospace, monospace; }
.columns { display: flex; gap: 2em; flex-wrap: wrap; } .columns > div { flex: 1 1 22em; }
.figure { margin: 0.5em 0 1em; }
footer { margin-top: 3em; color: #777; font-size: 0.85em; }
</style>
</head>
<body>
__BODY__
</body>
</html>
"""
