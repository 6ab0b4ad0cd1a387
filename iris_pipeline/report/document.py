"""A report as plain data (header lines, sections of paragraphs, lists and tables), so that the
Markdown and the HTML fragment are two renderings of exactly the same content."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class ItemList:
    items: list[str]
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    """A table under a caption line (the HTML fragment, which allows no <table>, renders it as a list)."""

    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    """A plot file beside the report (Markdown shows it; the HTML fragment names it in text)."""

    path: str
    caption: str


Block = Paragraph | ItemList | Table | Image


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    header_lines: list[str]
    sections: list[Section]
    references: list[str]
    references_title: str


# A reference mark inside text ("see reference n"); each renderer turns it into <sup>[n]</sup>.
_REF_OPEN, _REF_CLOSE = "\u27e6", "\u27e7"
REF_PATTERN = re.compile(f"{_REF_OPEN}(\\d+){_REF_CLOSE}")


def ref_mark(number: int) -> str:
    return f"{_REF_OPEN}{number}{_REF_CLOSE}"


def render_refs(text: str) -> str:
    return REF_PATTERN.sub(lambda m: f"<sup>[{m.group(1)}]</sup>", text)
