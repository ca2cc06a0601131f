"""The report: one self-contained static HTML page (PNG figures embedded) and a Markdown summary."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

from .atomic import atomic_write_text
from .records import RunRecord

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
     color:#1b1b1b;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
code,pre{background:#f4f4f4;border-radius:3px;padding:.1em .3em;font-size:.92em}
pre{padding:.6em;overflow-x:auto}
.scroll{overflow-x:auto;max-width:100%} table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left} th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#0a7d28;font-weight:600} .failed{color:#b00020;font-weight:600}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.9em;color:#444}
.meta{color:#555;font-size:.88em} .toc a{margin-right:1em}
"""


def format_value(v: Any, decimals: int | None = None) -> str:
    """Numbers with sensible precision (``decimals`` fixed for a whole column), mappings and sequences item
    by item, everything else as text."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:  # NaN
            return "nan"
        if decimals is not None:
            return f"{v:,.{decimals}f}"
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def column_decimals(values: Sequence[Any]) -> int | None:
    """One number of decimals for a column of floats (4 significant digits of its largest entry), so that
    its numbers line up; None (each value formatted alone) when the column is not all floats of one scale."""
    floats = [abs(v) for v in values if isinstance(v, float) and v == v]
    if not floats or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values if v is not None):
        return None
    largest, smallest = max(floats), min((f for f in floats if f > 0), default=0.0)
    if largest == 0 or largest >= 1e5 or smallest < 1e-3 or largest / smallest >= 1e3:
        return None
    return max(0, min(6, 3 - math.floor(math.log10(largest))))


def _formatted_rows(rows: Sequence[Sequence[Any]]) -> list[list[tuple[Any, str]]]:
    width = max((len(r) for r in rows), default=0)
    decimals = [column_decimals([r[c] for r in rows if c < len(r)]) for c in range(width)]
    return [[(v, format_value(v, decimals[c])) for c, v in enumerate(row)] for row in rows]


def _embed_png(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _html_cell(v: Any, text: str) -> str:
    """A table cell; numbers are right-aligned in tabular figures so that columns of them line up."""
    numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f"<td{' class=num' if numeric else ''}>{html.escape(text)}</td>"


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_html_cell(v, text) for v, text in row) + "</tr>" for row in _formatted_rows(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _html_record(rec: RunRecord, base: Path, anchor: str) -> str:
    esc = html.escape
    parts = [f'<h2 id="{anchor}">{esc(rec.title)} <span class="{esc(rec.status)}">[{esc(rec.status)}]</span></h2>']
    meta = [f"seed {rec.seed}", rec.created, f"torch {rec.env.get('versions', {}).get('torch')}"]
    if rec.env.get("torch_threads"):
        meta.append(f"{rec.env['torch_threads']} threads")
    if rec.env.get("cpu_model"):
        meta.append(str(rec.env["cpu_model"]))
    parts.append(f'<p>Reproduce: <code>{esc(rec.command)}</code> &nbsp; <span class="meta">'
                 f'{esc(" · ".join(meta))}</span></p>')
    if rec.error:
        parts.append(f"<pre>{esc(rec.error)}</pre>")
    for note in rec.notes:
        parts.append(f"<p>{esc(note)}</p>")
    if rec.metrics:
        parts.append("<h3>Metrics</h3>" + _html_table(["metric", "value"], [[k, v] for k, v in rec.metrics.items()]))
    for t in rec.tables:
        cmd = f' <span class="meta">(<code>{esc(t.command)}</code>)</span>' if t.command else ""
        parts.append(f"<h3>{esc(t.title)}{cmd}</h3>" + _html_table(t.columns, t.rows))
    for f in rec.figures:
        src = _embed_png(base / f.path if not Path(f.path).is_absolute() else Path(f.path))
        cmd = f" Reproduce: <code>{esc(f.command)}</code>" if f.command else ""
        img = (f'<img src="{src}" alt="{esc(f.caption)}">' if src
               else f"<p class='failed'>missing figure {esc(f.path)}</p>")
        parts.append(f"<figure>{img}<figcaption>{esc(f.caption)}{cmd}</figcaption></figure>")
    if rec.timings:
        parts.append("<h3>Timings</h3>" + _html_table(["step", "wall time (s)"], list(rec.timings.items())))
    if rec.config:
        parts.append("<details><summary>Config</summary>"
                     + _html_table(["key", "value"], [[k, v] for k, v in rec.config.items()]) + "</details>")
    return "\n".join(parts)


def render_html(records: Sequence[tuple[Path, RunRecord]], title: str = "attnlab report") -> str:
    """One self-contained page: every figure is embedded, so the file can be mailed or archived alone.

    ``records`` pairs each record with the file it was loaded from (figure paths are relative to it).
    """
    esc = html.escape
    toc = " ".join(f'<a href="#r{i}">{esc(r.title)}</a>' for i, (_, r) in enumerate(records))
    n_ok = sum(r.status == "ok" for _, r in records)
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="meta">{len(records)} run(s), {n_ok} ok, {len(records) - n_ok} failed.</p>',
            f'<p class="toc">{toc}</p>']
    if not records:
        body.append("<p>No run records were found.</p>")
    for i, (path, rec) in enumerate(records):
        body.append(_html_record(rec, Path(path).parent, f"r{i}"))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(text for _, text in row) + " |" for row in _formatted_rows(rows)]
    return "\n".join(lines)


def render_markdown(records: Sequence[tuple[Path, RunRecord]], max_metrics: int = 8) -> str:
    """A short summary for the terminal: status, headline metrics and the reproducing command per record."""
    out = ["# attnlab report summary", ""]
    for _, rec in records:
        out.append(f"## {rec.title} — {rec.status}")
        out.append(f"`{rec.command}` (seed {rec.seed})")
        if rec.error:
            out.append(f"error: {rec.error.splitlines()[-1] if rec.error.strip() else rec.error}")
        if rec.metrics:
            items = list(rec.metrics.items())[:max_metrics]
            out += ["", _md_table(["metric", "value"], items)]
        out.append("")
    return "\n".join(out)


def page_path(out: str | Path) -> Path:
    """The report page for ``out``: ``out`` itself when it ends in ``.html``, else ``out/index.html``."""
    out = Path(out)
    return out if out.suffix == ".html" else out / "index.html"


def summary_path(html_path: Path) -> Path:
    """The Markdown summary written beside a report page: ``x.html`` -> ``x.md`` (never another page's)."""
    return html_path.with_suffix(".md")


def write_report(records: Sequence[tuple[Path, RunRecord]], out: str | Path, title: str = "attnlab report") -> Path:
    """Write ``index.html`` (when ``out`` is a directory, else the ``.html`` file ``out``) and the Markdown
    summary beside it (:func:`summary_path`). Callers check for existing files first
    (:func:`attnlab.core.outputs.output_file`)."""
    html_path = page_path(out)
    atomic_write_text(html_path, render_html(records, title))
    atomic_write_text(summary_path(html_path), render_markdown(records))
    return html_path
