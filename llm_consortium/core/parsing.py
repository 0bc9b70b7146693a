"""Reading the arbiter's XML-ish reply, whole or while it streams.

Models are sloppy with the format, so everything here is lenient and never
raises: tags in any case, with attributes or stray whitespace, prose or code
fences around them, reasoning blocks quoting the format before the answer,
repeated answers and truncated output.
"""

from __future__ import annotations

import re
from bisect import bisect_left

from .results import Judgement

# The arbiter's sections, in the order the prompt asks for them.
SECTION_TAGS = (
    "analysis",
    "groups",
    "dissent",
    "refinement_areas",
    "confidence",
    "synthesis",
)
# Blocks some models wrap their reasoning in, before the actual answer.
REASONING_TAGS = ("thinking", "think", "reasoning")

_OPEN = {
    name: re.compile(rf"<\s*{name}\b[^>]*>", re.IGNORECASE)
    for name in SECTION_TAGS + REASONING_TAGS
}
_CLOSE = {
    name: re.compile(rf"<\s*/\s*{name}\s*>", re.IGNORECASE)
    for name in SECTION_TAGS + REASONING_TAGS
}
_ANY_SECTION_OPEN = re.compile(
    rf"<\s*(?:{'|'.join(SECTION_TAGS)})\b[^>]*>", re.IGNORECASE
)
# "thinking" is listed before "think", so the longer name wins.
_ANY_REASONING_OPEN = re.compile(
    rf"<\s*({'|'.join(REASONING_TAGS)})\b[^>]*>", re.IGNORECASE
)

# A fence wrapping a whole section, as in "```xml\n...\n```". Fences naming a
# programming language are kept: there the code block is part of the answer.
_WRAPPING_FENCE = re.compile(
    r"```[ \t]*(?:xml|markdown|md|text|txt|plaintext)?[ \t]*\n(.*?)\n?[ \t]*```",
    re.IGNORECASE | re.DOTALL,
)
_AREA_ITEM = re.compile(
    r"<\s*(area|item)\b[^>]*>(.*?)<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL
)
# "-", "*", "+", "•", "1." or "1)" followed by whitespace (so "**bold**" stays).
_BULLET = re.compile(r"^(?:[-*+•]|\d+[.)])(?:\s+|$)")
_NOT_AN_AREA = {"none", "n/a"}

# The first number in the text, optionally negative, a percentage or a fraction
# such as "8.5/10". The lookarounds skip digits inside words ("gpt4", "2nd").
_CONFIDENCE = re.compile(
    r"(?<![\w.])(-)?(\d+(?:\.\d+)?|\.\d+)(?!\w)\s*(?:(%)|/\s*(\d+(?:\.\d+)?|\.\d+))?"
)
# The start of some closing tag, cut short: "<", "</", "</na", "</name ".
_CLOSE_FRAGMENT = re.compile(r"<\s*(?:/\s*(\w*)(\s*))?")


def parse_confidence(text: str) -> float | None:
    """Read a confidence such as "0.85", "85%", "85", "8.5/10" or "Confidence: 0.9".

    A bare value in (1, 100] is taken as a percentage. Returns a float in
    [0, 1], or None when there is no usable number (words, garbage, a negative
    value, or more than 100).
    """
    match = _CONFIDENCE.search(text or "")
    if match is None:
        return None
    negative, number, percent, denominator = match.groups()
    value = float(number)
    if negative or value > 100:
        return None
    if percent:
        value /= 100
    elif denominator is not None:
        if float(denominator) == 0:
            return None
        value /= float(denominator)
    elif value > 1:
        value /= 100
    return min(max(value, 0.0), 1.0)


def parse_arbiter(text: str) -> Judgement:
    """Parse an arbiter reply into a Judgement. Never raises.

    The synthesis is the last ``<synthesis>`` block outside leading reasoning
    that is not an echo of the format instructions. Every other section is
    read from the same answer: its last block before that synthesis, or if
    there is none, its first after it. So a confidence quoted inside the
    synthesis, or a quoted format, never decides the verdict.

    Missing sections get the defaults "", 0.0 and []. ``parse_ok`` is
    True only when a non-empty synthesis was found.
    """
    sections = read_sections(text)
    confidence = parse_confidence(sections["confidence"])
    return Judgement(
        synthesis=sections["synthesis"],
        confidence=0.0 if confidence is None else confidence,
        analysis=sections["analysis"],
        dissent=sections["dissent"],
        refinement_areas=_split_areas(sections["refinement_areas"]),
        parse_ok=bool(sections["synthesis"]),
    )


def read_sections(text: str) -> dict[str, str]:
    """Each section of an arbiter reply, "" where there is none, chosen as
    ``parse_arbiter`` describes: the last synthesis outside leading
    reasoning, and every other section from the same answer. Never raises."""
    text = "" if text is None else str(text)
    # Leading reasoning blocks are skipped, so tags they quote don't count. If
    # one is never closed, search everything.
    body = _Reply(text[_reasoning_end(text) or 0 :])
    anchor, synthesis = body.nearest("synthesis", len(body.text))
    return {name: synthesis if name == "synthesis" else body.nearest(name, anchor)[1] for name in SECTION_TAGS}


class _Reply:
    """A reply's tags, found once, so that hostile text full of tags is read
    in about linear time: each block's content is cut only when it is the
    candidate being looked at."""

    def __init__(self, text: str):
        self.text = text
        self.sections = [m.start() for m in _ANY_SECTION_OPEN.finditer(text)]

    def nearest(self, name: str, anchor: int) -> tuple[int, str]:
        """(start, content) of the block of section ``name`` that is not
        empty or an echo of the format instructions: the last one starting
        before ``anchor``, else the first after it; (anchor, "") if none."""
        openings = list(_OPEN[name].finditer(self.text))
        closes = [m.start() for m in _CLOSE[name].finditer(self.text)]
        split = bisect_left([o.start() for o in openings], anchor)
        for opening in [*reversed(openings[:split]), *openings[split:]]:
            content = self._content(name, opening.end(), closes)
            if content and not _is_echo(name, content):
                return opening.start(), content
        return anchor, ""

    def _content(self, name: str, start: int, closes: list[int]) -> str:
        """The cleaned content of a block of ``name`` opened at ``start``.

        A block whose closing tag never comes, as in truncated output, runs
        to the next section's opening tag or the end of the text.
        """
        close = bisect_left(closes, start)
        following = bisect_left(self.sections, start)
        if close < len(closes):
            content = self.text[start : closes[close]]
        elif following < len(self.sections):
            content = self.text[start : self.sections[following]]
        else:
            content = self.text[start:]
            content = content[: _dangling_close_start(content, name)]
        return _unwrap_fence(content.strip())


def _reasoning_end(text: str) -> int | None:
    """Index just after the reasoning blocks that precede the first section tag.

    Returns 0 when there are none, and None while such a block is unclosed.
    Reasoning tags that appear after a section has begun are left alone: a
    synthesis may well discuss ``<think>`` tags.
    """
    position = 0
    while True:
        reasoning = _ANY_REASONING_OPEN.search(text, position)
        if reasoning is None:
            return position
        section = _ANY_SECTION_OPEN.search(text, position)
        if section is not None and section.start() < reasoning.start():
            return position
        close = _CLOSE[reasoning.group(1).lower()].search(text, reasoning.end())
        if close is None:
            return None
        position = close.end()


def _is_echo(name: str, content: str) -> bool:
    """Whether ``content`` repeats a prompt's description of section ``name``:
    all of it, or the first six words of a longer one."""
    said = " ".join(content.lower().split())
    for described in _FORMAT.get(name, ()):
        words = described.split()
        if said == described or (len(words) > 6 and said.startswith(" ".join(words[:6]))):
            return True
    return False


def _format_descriptions() -> dict[str, list[str]]:
    """Each section's descriptions in the arbiter's prompts, lower case."""
    from .prompts import template

    found: dict[str, list[str]] = {}
    for name in ("arbiter", "compact_arbiter"):
        for tag, text in re.findall(r"^<(\w+)>([^<]+)</\1>$", template(name).template, re.MULTILINE):
            found.setdefault(tag, []).append(" ".join(text.lower().split()))
    return found


_FORMAT = _format_descriptions()


def _dangling_close_start(text: str, name: str, start: int = 0) -> int:
    """Index (from ``start`` on) of a trailing fragment that may grow into ``</name>``.

    Returns len(text) when the text doesn't end in such a fragment: "<",
    "</", "</syn" and "</synthesis " may; "</syn " and "< b" may not. Only
    the last "<" can start one: a closing tag contains no other "<".
    """
    last_lt = text.rfind("<", start)
    if last_lt == -1:
        return len(text)
    fragment = _CLOSE_FRAGMENT.fullmatch(text, last_lt)
    if fragment is None:
        return len(text)
    word = (fragment.group(1) or "").lower()
    space = fragment.group(2) or ""
    # Whitespace may only follow the complete name.
    if name.startswith(word) and (not space or word == name):
        return last_lt
    return len(text)


def _unwrap_fence(content: str) -> str:
    """Remove a markdown fence that wraps the whole content, if any."""
    fence = _WRAPPING_FENCE.fullmatch(content)
    if fence is None or "```" in fence.group(1):
        return content
    return fence.group(1).strip()


def _split_areas(content: str) -> list[str]:
    """Split refinement areas into items: <area>/<item> tags, else lines."""
    items = [match.group(2) for match in _AREA_ITEM.finditer(content)]
    if not items:
        items = content.splitlines()
    areas = []
    for item in items:
        item = _BULLET.sub("", item.strip()).strip()
        if item and item.lower().rstrip(".") not in _NOT_AN_AREA:
            areas.append(item)
    return areas
