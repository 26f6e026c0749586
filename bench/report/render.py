"""Two renderings of one list of blocks: Markdown (figures as files beside it) and a self-contained
HTML page (figures embedded as data URIs, no script, nothing fetched)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from bench.results import write_atomic

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
"""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    name: str  # a PNG from the figures passed to write_documents
    caption: str


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(blocks: list, figure_dir: str = "plots") -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(map(_md_cell, block.headers)) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Figure):
            lines += [f"![{block.caption}]({figure_dir}/{block.name})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def html_page(blocks: list, figures: dict[str, bytes], title: str) -> str:
    e = html.escape
    parts = [
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body>"
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(str(h))}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Figure):
            data = base64.b64encode(figures[block.name]).decode("ascii")
            parts.append(
                f"<figure><img id='{e(block.name)}' alt='{e(block.caption)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{e(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_documents(blocks: list, figures: dict[str, bytes], out_dir: Path, title: str) -> dict[str, Path]:
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        write_atomic(plot_dir / name, png)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    write_atomic(paths["markdown"], markdown(blocks))
    write_atomic(paths["html"], html_page(blocks, figures, title))
    return paths
