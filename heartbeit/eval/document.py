"""The report as a document: blocks written once as Markdown and once as HTML (no Markdown parser needed),
and the links from it into the results folder's parts."""
from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .tables import MISSING

_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>')]


def inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def slug(text: str) -> str:
    """A file-name-safe form of a label (task, architecture, method)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def part_link(path: Path, part_dir: Path) -> str:
    """Link target relative to the results folder: `<part>/...` (a staging folder is renamed to <part>)."""
    return f"{part_dir.name.split('.staging')[0]}/{Path(path).relative_to(part_dir).as_posix()}"


def part_files(part_dir: Path, suffix: str) -> list[str]:
    return sorted(part_link(p, part_dir) for p in part_dir.rglob(f"*{suffix}")) if part_dir.is_dir() else []


class Document:
    """The report as blocks, written once as Markdown and once as HTML (no Markdown parser needed)."""

    def __init__(self, title: str):
        self.title = title
        self.md: list[str] = [f"# {title}\n"]
        self.html: list[str] = [f"<h1>{inline_html(title)}</h1>"]
        self.links: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{inline_html(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{inline_html(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")
        self.html.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>")

    def code(self, text: str) -> None:
        self.md.append(f"```\n{text}\n```\n")
        self.html.append(f"<pre><code>{html.escape(text)}</code></pre>")

    def table(self, df: pd.DataFrame, caption: str = "") -> None:
        if df is None or df.empty:
            return
        rows = df.astype(object).where(df.notna(), MISSING).values.tolist()
        headers = [str(c) for c in df.columns]
        if caption:
            self.md.append(f"*{caption}*\n")
        self.md.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True) + "\n")
        cap = f"<caption>{inline_html(caption)}</caption>" if caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
        self.html.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, relpath: str, caption: str) -> None:
        self.links.append(relpath)
        self.md.append(f"![{caption}]({relpath})\n")
        self.html.append(f'<figure><img src="{html.escape(relpath)}" alt="{html.escape(caption)}">'
                         f"<figcaption>{inline_html(caption)}</figcaption></figure>")

    def link_list(self, relpaths: list[str]) -> None:
        self.links.extend(relpaths)
        self.bullets([f"[{p}]({p})" for p in relpaths])

    def markdown(self) -> str:
        return "\n".join(self.md)

    def to_html(self) -> str:
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:.85em}"
                 "th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left}th{background:#eee}"
                 "caption{text-align:left;font-style:italic;padding:.3em 0}"
                 "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:.85em;color:#444}"
                 "pre{background:#f4f4f4;padding:.6em;overflow-x:auto}code{background:#f4f4f4}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(self.html) + "\n</body></html>\n")
