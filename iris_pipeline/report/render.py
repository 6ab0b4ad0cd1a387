"""Render a report `Document` as Markdown, or as the HTML fragment users paste into the IRIS web form.

The fragment uses only <p>, <br/>, <hr/>, <h3>, <ol>, <ul>, <li> and <sup>, with no attributes:
the form strips anything else (no styles, no scripts, no tables, no images). Tables therefore
become one list item per row ("header: value; ..."), and plots are named by file.
"""

from __future__ import annotations

import html

from iris_pipeline.report.document import Document, Image, ItemList, Paragraph, Table, render_refs

ALLOWED_HTML_TAGS = frozenset({"p", "br", "hr", "h3", "ol", "ul", "li", "sup"})


def _md_text(text: str) -> str:
    return render_refs(text)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_block(block) -> list[str]:
    if isinstance(block, Paragraph):
        return [_md_text(block.text), ""]
    if isinstance(block, ItemList):
        marks = [f"{i}." if block.ordered else "-" for i in range(1, len(block.items) + 1)]
        return [f"{mark} {_md_text(item)}" for mark, item in zip(marks, block.items, strict=True)] + [""]
    if isinstance(block, Table):
        lines = [f"**{block.caption}**", "", "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                 "|" + "|".join(" --- " for _ in block.header) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return lines + [""]
    if isinstance(block, Image):
        return [f"![{block.caption}]({block.path})", "", f"- {block.caption}: `{block.path}`", ""]
    raise TypeError(f"unknown block {type(block).__name__}")


def to_markdown(doc: Document) -> str:
    # two trailing spaces: a hard line break, so the header lines stay one per line as in the seed note
    lines = ["  \n".join(doc.header_lines), "", "---", ""]
    for section in doc.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _md_block(block)
    lines += [f"## {doc.references_title}", ""]
    lines += [f"{i}. {_md_text(ref)}" for i, ref in enumerate(doc.references, start=1)]
    return "\n".join(lines).rstrip() + "\n"


def _html_text(text: str) -> str:
    return render_refs(html.escape(text, quote=False))


def _html_list(items: list[str], ordered: bool) -> str:
    tag = "ol" if ordered else "ul"
    return f"<{tag}>" + "".join(f"<li>{item}</li>" for item in items) + f"</{tag}>"


def _html_block(block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_html_text(block.text)}</p>"
    if isinstance(block, ItemList):
        return _html_list([_html_text(i) for i in block.items], block.ordered)
    if isinstance(block, Table):
        rows = ["; ".join(f"{_html_text(h)}: {_html_text(c)}" for h, c in zip(block.header, row, strict=True))
                for row in block.rows]
        return f"<p>{_html_text(block.caption)}</p>" + _html_list(rows, ordered=False)
    if isinstance(block, Image):
        return f"<p>{_html_text(block.caption)}: {_html_text(block.path)}</p>"
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html(doc: Document) -> str:
    parts = ["<p>" + "<br/>".join(_html_text(line) for line in doc.header_lines) + "</p>", "<hr/>"]
    for section in doc.sections:
        parts.append(f"<h3>{_html_text(section.title)}</h3>")
        parts += [_html_block(block) for block in section.blocks]
    parts.append(f"<h3>{_html_text(doc.references_title)}</h3>")
    parts.append(_html_list([_html_text(ref) for ref in doc.references], ordered=True))
    return "\n".join(parts) + "\n"
