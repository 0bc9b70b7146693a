"""HTML escaped by construction.

``el`` builds an element: every child or attribute value that is not
``Markup`` is escaped, so model text can only ever be text, and its
bidirectional controls are shown, not applied (``safetext.visible``).
``Markup`` is made by ``el`` itself and by ``markdown``, whose output is sanitised.
"""

from __future__ import annotations

from html import escape

from ...core.safetext import clean, visible

_VOID = {"br", "hr", "img", "input", "link", "meta"}


class Markup(str):
    """HTML safe to send as it is."""


def el(tag: str, *children, **attrs) -> Markup:
    """``<tag attrs>children</tag>``. Attribute names: a trailing ``_`` is
    dropped (``class_``), other ``_`` become ``-`` (``data_run``); a value
    None or False leaves the attribute out, True writes it bare."""
    parts = [f"<{tag}"]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f" {name}" if value is True else f' {name}="{escape(visible(clean(str(value))))}"')
    parts.append(">")
    if tag not in _VOID:
        parts += [_children(children), f"</{tag}>"]
    return Markup("".join(parts))


def frag(*children) -> Markup:
    """Children without an element around them."""
    return Markup(_children(children))


def _children(children) -> str:
    out = []
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, Markup):
            out.append(child)
        elif isinstance(child, (list, tuple)):
            out.append(_children(child))
        else:
            out.append(escape(visible(clean(str(child)))))
    return "".join(out)


_renderer = None


def markdown(text: str | None) -> Markup:
    """``text`` rendered as CommonMark, sanitised: raw HTML is shown as text
    (markdown-it's ``js-default``: ``html`` off), and links and images whose
    address is ``javascript:``, ``vbscript:``, ``file:`` or ``data:`` (but
    for data: images) stay text. Images from elsewhere are refused by the
    page's Content-Security-Policy."""
    global _renderer
    if _renderer is None:
        from markdown_it import MarkdownIt

        _renderer = MarkdownIt("js-default")
        _renderer.add_render_rule("table_open", lambda *_: SCROLLS + "<table>\n")
        _renderer.add_render_rule("table_close", lambda *_: "</table>\n</div>\n")
    return Markup(_renderer.render(visible(clean(text or ""))))


# Around a table, a box that scrolls sideways when the table is wider than
# the screen (the page itself never does); focusable, so a keyboard scrolls it.
SCROLLS = '<div class="scrolls" tabindex="0" role="region" aria-label="Table, scrolls sideways">'


def scrolls(table: Markup) -> Markup:
    """``table`` in the box that scrolls it sideways (``SCROLLS``)."""
    return Markup(SCROLLS + table + "</div>")
