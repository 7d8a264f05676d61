"""Self-contained HTML: one file, no network, figures embedded as base64 data URIs.

Reports are copied off clusters, mailed and opened years later; anything linked (a CDN script, a
PNG beside the file) breaks. So the page carries its own CSS and every image's bytes. Text from
data (region names, labels) is escaped.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#2c3e50;color:#fff;padding:14px 24px} header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#d0d7de;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;margin:18px 0;padding:12px 18px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f4f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:8px 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555} .warn{background:#fff4e5;border-left:4px solid #e67e22;padding:6px 10px}
.note{font-size:12px;color:#555} .big{font-size:20px;font-weight:600}
"""

MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def data_uri(path: Path) -> str:
    """``data:<mime>;base64,...`` of an image file."""
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure(path: Path, caption: str = "") -> str:
    """An embedded image; a missing file becomes a visible note rather than a broken image."""
    if not path.is_file():
        return f'<p class="warn">figure missing: {esc(path.name)}</p>'
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(caption or path.name)}" src="{data_uri(path)}">{cap}</figure>'


def table(frame: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A DataFrame as an escaped HTML table (numbers right-aligned, NaN as n/a)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):  # keeps each column's dtype (iterrows casts to float)
        cells = []
        for value in row:
            if isinstance(value, (bool, np.bool_)) or value is None or value is pd.NA:
                cells.append(f"<td>{esc('n/a' if value is None or value is pd.NA else value)}</td>")
            elif isinstance(value, (int, np.integer)):
                cells.append(f'<td class="num">{value}</td>')
            elif isinstance(value, (float, np.floating)):
                text = "n/a" if pd.isna(value) else float_format.format(value)
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{esc(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(title: str, subtitle: str, sections: list[str]) -> str:
    """The whole document."""
    body = "\n".join(f"<section>{s}</section>" for s in sections if s)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><main>\n{body}\n</main></body></html>\n")
