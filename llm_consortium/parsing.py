"""Reading the arbiter's XML-ish reply, whole or while it streams.

Models are sloppy with the format, so everything here is lenient and never
raises: tags in any case, with attributes or stray whitespace, prose or code
fences around them, reasoning blocks quoting the format before the answer,
repeated answers and truncated output.
"""

from __future__ import annotations

import re

from .results import Judgement

# The arbiter's sections, in the order the prompt asks for them.
SECTION_TAGS = (
    "analysis",
    "dissent",
    "refinement_areas",
    "confidence",
    "needs_iteration",
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
_TRUE_WORDS = {"true", "yes", "1"}
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

    Missing sections get the defaults "", 0.0, False and []. ``parse_ok`` is
    True only when a non-empty synthesis was found.
    """
    text = "" if text is None else str(text)
    # Leading reasoning blocks are skipped, so tags they quote don't count. If
    # one is never closed, search everything: the last occurrence wins anyway.
    body = text[_reasoning_end(text) or 0 :]
    sections = {name: _section(body, name) for name in SECTION_TAGS}

    confidence = parse_confidence(sections["confidence"])
    # The first word decides, so "**True**" and "yes." count.
    first_word = re.match(r"\W*(\w+)", sections["needs_iteration"])
    return Judgement(
        synthesis=sections["synthesis"],
        confidence=0.0 if confidence is None else confidence,
        analysis=sections["analysis"],
        dissent=sections["dissent"],
        needs_iteration=bool(first_word and first_word.group(1).lower() in _TRUE_WORDS),
        refinement_areas=_split_areas(sections["refinement_areas"]),
        parse_ok=bool(sections["synthesis"]),
    )


class SynthesisStream:
    """Pull the synthesis out of an arbiter reply while it streams.

    ``feed`` each chunk and print what it returns; call ``finish`` at the end.
    Only text between ``<synthesis>`` and ``</synthesis>`` is released, never
    part of a tag: a trailing fragment that could still become
    ``</synthesis>`` (say ``</syn``) is held back until the next chunk shows
    what it is, and so is trailing whitespace. For a well-formed reply the
    pieces add up to ``parse_arbiter(reply).synthesis``.

    The whole reply is kept. Until the synthesis opens, it is searched again
    whenever a chunk could complete a tag; after that, positions are
    remembered so that each feed only looks at what is new.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._content_start: int | None = None  # index just after <synthesis>
        self._emitted = 0  # index up to which synthesis text has been handled
        self._returned_text = False  # has any synthesis text been returned?
        self._scan = 0  # where the search for </synthesis> resumes
        self._finished = False

    @property
    def started(self) -> bool:
        """True once the opening ``<synthesis>`` tag has arrived."""
        return self._content_start is not None

    @property
    def finished(self) -> bool:
        """True once no more synthesis text will come (closing tag or finish())."""
        return self._finished

    def feed(self, chunk: str) -> str:
        """Add a chunk of the reply; return the synthesis text it made available."""
        chunk = chunk or ""
        if self._finished:
            return ""
        self._buffer += chunk
        if self._content_start is None:
            # Every tag ends with ">", so without one nothing new can be found.
            if ">" not in chunk:
                return ""
            self._content_start = self._find_content_start()
            if self._content_start is None:
                return ""
            self._emitted = self._scan = self._content_start

        buffer = self._buffer
        close = _CLOSE["synthesis"].search(buffer, self._scan)
        if close is not None:
            end = close.start()
            self._finished = True
        else:
            end = _dangling_close_start(buffer, "synthesis", self._scan)
            self._scan = end  # no closing tag can begin before this any more

        piece = buffer[self._emitted : end]
        if not self._returned_text:  # the synthesis starts at its first non-space
            leading = len(piece) - len(piece.lstrip())
            self._emitted += leading
            piece = piece[leading:]
        piece = piece.rstrip()  # trailing whitespace may end it: hold it back
        self._emitted += len(piece)
        self._returned_text = self._returned_text or bool(piece)
        return piece

    def finish(self) -> str:
        """End of stream: return whatever synthesis text is still due.

        Held-back trailing whitespace and an unfinished closing tag are
        dropped. If the synthesis never started streaming because it sat
        behind a reasoning block that was never closed, return what
        parse_arbiter finds in the whole reply, so the output still matches.
        """
        if self._finished:
            return ""
        self._finished = True
        if self.started:
            return ""
        return parse_arbiter(self._buffer).synthesis

    def _find_content_start(self) -> int | None:
        """Index just after the first <synthesis> tag outside reasoning blocks."""
        start = _reasoning_end(self._buffer)
        if start is None:  # still inside a reasoning block
            return None
        opening = _OPEN["synthesis"].search(self._buffer, start)
        return None if opening is None else opening.end()


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


def _section(text: str, name: str) -> str:
    """Cleaned content of section ``name``, "" when its tag is absent.

    The last opening tag wins (a model may quote the format before answering).
    If that tag is never closed, as in truncated output, the section runs to
    the next section's opening tag or the end of the text.
    """
    openings = list(_OPEN[name].finditer(text))
    if not openings:
        return ""
    start = openings[-1].end()
    close = _CLOSE[name].search(text, start)
    if close is not None:
        content = text[start : close.start()]
    else:
        following = _ANY_SECTION_OPEN.search(text, start)
        if following is not None:
            content = text[start : following.start()]
        else:
            content = text[start:]
            content = content[: _dangling_close_start(content, name)]
    return _unwrap_fence(content.strip())


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
