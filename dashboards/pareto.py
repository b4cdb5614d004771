"""The Pareto front of a multi-objective study: a terminal table and an HTML page.

Optuna's own ``plot_pareto_front`` draws the figure (a Plotly figure factory we
need not rewrite); this module adds the table and the page around it.
"""

from __future__ import annotations

import html
from pathlib import Path

import optuna
from optuna.trial import TrialState

from studies import record
from studies.files import atomic_write_text


def _names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"objective {i}" for i in range(len(study.directions))]


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pareto_rows(study: optuna.Study) -> list[dict[str, object]]:
    """One dict per Pareto-optimal trial, sorted by the first objective (best first)."""
    names = _names(study)
    first_max = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    rows = []
    for t in study.best_trials:
        row: dict[str, object] = {"trial": t.number}
        row.update(dict(zip(names, t.values, strict=True)))
        row["model"] = (t.user_attrs.get(record.CONFIG) or {}).get("model")
        row.update(t.params)
        rows.append(row)
    return sorted(rows, key=lambda r: r[names[0]], reverse=first_max)


def format_pareto(study: optuna.Study) -> str:
    """The Pareto front as a fixed-width table."""
    rows = pareto_rows(study)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    head = (f"Pareto front: {len(rows)} of {complete} complete trials "
            f"({', '.join(f'{n} {d.name.lower()}' for n, d in zip(_names(study), study.directions))})")
    if not rows:
        return head
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_pareto_report(study: optuna.Study, path: str | Path) -> Path:
    """One self-contained HTML page: the Pareto figure and the front as a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = _names(study)
    parts = [f"<h1>Pareto front: {html.escape(study.study_name)}</h1>"]
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        fig = optuna.visualization.plot_pareto_front(study, target_names=names)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=True))
        rows = pareto_rows(study)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c, '')))}</td>" for c in columns)
                       + "</tr>" for r in rows)
        parts.append(f"<h2>Pareto-optimal trials</h2><table><tr>{header}</tr>{body}</table>")
    else:
        parts.append("<p>No complete trial yet.</p>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(study.study_name)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "td,th{padding:2px 8px;text-align:right}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    atomic_write_text(path, page)
    return path
