"""Reading the arbiter's XML-ish reply.

Models are sloppy with the format, so everything here is lenient and never
raises: tags in any case, with attributes or stray whitespace, prose or code
fences around them, reasoning blocks quoting the format before the answer,
and repeated answers. What it will not take for a verdict: a synthesis
that is empty, never closed (the reply was cut off) or an echo of the
prompt's own instructions.

Model output is untrusted, so reading it takes time linear in its length
(``benchmarks/bench_parse.py``), and a reply is read from its first
``MAX_REPLY_CHARS`` characters only.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import cache

from .prompts import ECHO, EMPTY, JUDGE_TEMPLATES, NO_SYNTHESIS, UNCLOSED, instruction_texts, template
from .results import Judgement

# The most characters of a reply that are read (about 1 MB); the rest is cut.
MAX_REPLY_CHARS = 1_000_000
# Words in a row that a synthesis must share with the instructions to count
# as repeating them (``_echoes``): enough that a verdict's own wording ("the
# best answer to the question is 42") never does.
ECHO_RUN = 8

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

# Tags hold no "<" (so a search never runs past the next one) and an
# opening tag is not self-closing ("<synthesis/>" opens nothing).
_ALL_TAGS = SECTION_TAGS + REASONING_TAGS
_OPEN = {name: re.compile(rf"<\s*{name}\b[^<>]*(?<!/)>", re.IGNORECASE) for name in _ALL_TAGS}
_CLOSE = {name: re.compile(rf"<\s*/\s*{name}\s*>", re.IGNORECASE) for name in _ALL_TAGS}
_AREA_OPEN = re.compile(r"<\s*(area|item)\b[^<>]*>", re.IGNORECASE)
_AREA_CLOSE = re.compile(r"<\s*/\s*(area|item)\s*>", re.IGNORECASE)
# Any tag, for reading the words of a text.
_TAG = re.compile(r"<\s*/?\s*[^\W\d][\w:-]*[^<>]*>")
_WORD = re.compile(r"[^\W_]+")
_ALNUM = re.compile(r"[^\W_]")
# Text before a synthesis's opening tag that may hold the start of an echo.
_BEFORE_CHARS = 200

# A fence wrapping a whole section, as in "```xml\n...\n```". Fences naming a
# programming language are kept: there the code block is part of the answer.
_WRAPPING_FENCE_LANGUAGES = {"", "xml", "markdown", "md", "text", "txt", "plaintext"}
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


def parse_arbiter(text: str, *, material: Sequence[str] = ()) -> Judgement:
    """Parse an arbiter reply into a Judgement. Never raises.

    The synthesis is the verdict: the last ``<synthesis>`` block outside
    leading reasoning that is neither empty nor an echo of the judge
    prompts' instructions (``_echoes``: ``material``, the question and the
    answers the judge was shown, may be quoted). Every other section is
    read from the same answer: its last block before that synthesis, or if
    there is none, its first after it. So a confidence quoted inside the synthesis,
    or a quoted format, never decides the verdict.

    There is no verdict (``parse_ok`` False, ``synthesis`` "") when no such
    block is found or when the last one is never closed: a reply cut off
    mid-stream is not an answer. The judgement's last note then says why,
    worded for the reminder that asks again (``prompts.reminder``). A reply
    over ``MAX_REPLY_CHARS`` is read from its beginning only, with a note.
    Other missing sections get the defaults "", 0.0 and [].
    """
    sections, problem, length = _read(text, material)
    confidence = parse_confidence(sections["confidence"])
    notes = []
    if length > MAX_REPLY_CHARS:
        notes.append(f"the arbiter's reply ({length:,} characters) was cut to its first "
                     f"{MAX_REPLY_CHARS:,} before parsing")
    if problem:
        notes.append(problem)
    return Judgement(
        synthesis=sections["synthesis"],
        confidence=0.0 if confidence is None else confidence,
        analysis=sections["analysis"],
        dissent=sections["dissent"],
        refinement_areas=_split_areas(sections["refinement_areas"]),
        parse_ok=problem is None,
        notes=notes,
    )


def read_sections(text: str) -> dict[str, str]:
    """Each section of an arbiter reply, "" where there is none, chosen as
    ``parse_arbiter`` describes. Never raises."""
    return _read(text)[0]


def _read(text: str, material: Sequence[str] = ()) -> tuple[dict[str, str], str | None, int]:
    """(the sections, why there is no verdict or None, the reply's full length)."""
    text = "" if text is None else str(text)
    length = len(text)
    reply = _Reply(text[:MAX_REPLY_CHARS])
    anchor, synthesis, problem = reply.verdict(material)
    sections = {name: reply.nearest(name, anchor) for name in SECTION_TAGS if name != "synthesis"}
    return {**sections, "synthesis": synthesis}, problem, length


class _Reply:
    """A reply's tags, found once (a pass for each tag name it holds), so
    that hostile text full of tags is read in linear time.

    A block of a section runs from an opening tag to the closing tag of
    that section after it, if one comes before that section's next opening
    tag; otherwise the block is never closed. So no two blocks of a section
    share any text, and reading every block of a section reads the reply at
    most twice.

    Leading reasoning blocks are skipped (``_reasoning_end``), so the tags
    they quote don't count; if one is never closed, everything is read.
    """

    def __init__(self, text: str):
        self.text = text
        # name -> [(start, end)] of its opening and of its closing tags, in order.
        self.opens: dict[str, list[tuple[int, int]]] = {name: [] for name in _ALL_TAGS}
        self.closes: dict[str, list[tuple[int, int]]] = {name: [] for name in _ALL_TAGS}
        lowered = text.lower()
        for name in _ALL_TAGS:
            if name in lowered:
                self.opens[name] = [match.span() for match in _OPEN[name].finditer(text)]
                self.closes[name] = [match.span() for match in _CLOSE[name].finditer(text)]
        self.sections = sorted(start for name in SECTION_TAGS for start, _ in self.opens[name])
        self.start = self._reasoning_end() or 0
        # Only the tags after the reasoning count.
        self.sections = self.sections[bisect_left(self.sections, self.start) :]
        for tags in (self.opens, self.closes):
            for name, spans in tags.items():
                tags[name] = spans[bisect_left(spans, (self.start, 0)) :]

    def _reasoning_end(self) -> int | None:
        """Index just after the reasoning blocks that precede the first section tag.

        Returns 0 when there are none, and None while such a block is
        unclosed. Reasoning tags that appear after a section has begun are
        left alone: a synthesis may well discuss ``<think>`` tags.
        """
        reasoning = sorted((span, name) for name in REASONING_TAGS for span in self.opens[name])
        # Indices into ``reasoning``, the sections and each name's closing
        # tags, which only grow.
        following, section, closing = 0, 0, dict.fromkeys(REASONING_TAGS, 0)
        position = 0
        while True:
            while following < len(reasoning) and reasoning[following][0][0] < position:
                following += 1
            if following == len(reasoning):
                return position
            (start, end), name = reasoning[following]
            while section < len(self.sections) and self.sections[section] < position:
                section += 1
            if section < len(self.sections) and self.sections[section] < start:
                return position
            closes = self.closes[name]
            while closing[name] < len(closes) and closes[closing[name]][0] < end:
                closing[name] += 1
            if closing[name] == len(closes):
                return None
            position = closes[closing[name]][1]

    def blocks(self, name: str) -> list[tuple[int, int, int | None]]:
        """(tag start, content start, content end or None if never closed)
        of each block of section ``name``, in order."""
        openings = self.opens[name]
        closes = [start for start, _ in self.closes[name]]
        found = []
        for k, (start, end) in enumerate(openings):
            following = openings[k + 1][0] if k + 1 < len(openings) else len(self.text)
            close = bisect_left(closes, end)
            found.append((start, end, closes[close] if close < len(closes) and closes[close] < following else None))
        return found

    def content(self, start: int, end: int | None, name: str) -> str:
        """The cleaned content of a block whose content starts at ``start``.

        A block that is never closed runs to the next section's opening tag,
        or to the end of the text, less a closing tag cut short there.
        """
        if end is None:
            following = bisect_right(self.sections, start)
            if following < len(self.sections):
                end = self.sections[following]
            else:
                end = _dangling_close_start(self.text, name, start)
        return _unwrap_fence(self.text[start:end].strip())

    def verdict(self, material: Sequence[str]) -> tuple[int, str, str | None]:
        """(start, content, None) of the synthesis that is the verdict, or
        (end of the text, "", why there is none). From the last block back,
        echoes and empty blocks are passed over; a block never closed that
        is not an echo ends the search: the reply was cut off."""
        why = NO_SYNTHESIS
        quoted = cache(lambda: _runs(material))  # read only if needed, then once
        for start, content_start, end in reversed(self.blocks("synthesis")):
            content = self.content(content_start, end, "synthesis")
            before = self.text[max(self.start, start - _BEFORE_CHARS) : start]
            if _echoes("synthesis", content, before, quoted):
                why = ECHO
            elif end is None:
                return len(self.text), "", UNCLOSED
            elif _is_empty(content):
                why = EMPTY if why == NO_SYNTHESIS else why
            else:
                return start, content, None
        return len(self.text), "", why

    def nearest(self, name: str, anchor: int) -> str:
        """The content of the block of section ``name`` that is not empty or
        an echo of the format instructions: the last one starting before
        ``anchor``, else the first after it; "" if none."""
        blocks = self.blocks(name)
        split = bisect_left([start for start, _, _ in blocks], anchor)
        for _, content_start, end in [*reversed(blocks[:split]), *blocks[split:]]:
            content = self.content(content_start, end, name)
            if content and not _is_description(name, content):
                return content
        return ""


def _echoes(name: str, content: str, before: str, quoted: Callable[[], set]) -> bool:
    """Whether the block of ``name`` holding ``content``, whose opening tag
    follows the text ``before``, repeats the judge prompts' instructions
    (``prompts.instruction_texts``) instead of answering.

    It does when ``content`` is a section's description from a prompt
    (``_is_description``), or when at least half of its words lie in runs
    of ``ECHO_RUN`` words that the instructions also hold. The runs may
    start in the words just before the opening tag, so a short content is
    caught too: "block." after "...because it had no <synthesis>". The
    question and the members' answers are not instructions: a run that
    they hold too (``quoted()``, the runs of ``parse_arbiter``'s
    ``material``) does not count, so a verdict may quote them at any length.
    """
    if _is_description(name, content):
        return True
    said = _words(content)
    if not said:
        return False
    lead = _words(before)[-(ECHO_RUN - 1) :]
    words = lead + said
    shared = [i for i in range(len(words) - ECHO_RUN + 1) if tuple(words[i : i + ECHO_RUN]) in _instruction_runs()]
    if shared:
        shared = [i for i in shared if tuple(words[i : i + ECHO_RUN]) not in quoted()]
    covered = [False] * len(words)
    for i in shared:
        covered[i : i + ECHO_RUN] = [True] * ECHO_RUN
    return 2 * sum(covered[len(lead) :]) >= len(said)


def _words(text: str) -> list[str]:
    """The words of ``text``, lower case, tags and punctuation left out."""
    return _WORD.findall(_TAG.sub(" ", text).lower())


@cache
def _instruction_runs() -> set[tuple[str, ...]]:
    """Every run of ``ECHO_RUN`` words in the judge prompts' instructions."""
    return _runs(instruction_texts())


def _runs(texts: Iterable[str]) -> set[tuple[str, ...]]:
    """Every run of ``ECHO_RUN`` words in each of ``texts``."""
    runs = set()
    for text in texts:
        words = _words(text)
        runs.update(tuple(words[i : i + ECHO_RUN]) for i in range(len(words) - ECHO_RUN + 1))
    return runs


def _is_description(name: str, content: str) -> bool:
    """Whether ``content`` is a prompt's description of section ``name``,
    case and spacing aside ("your answer to the question")."""
    return " ".join(content.lower().split()) in _descriptions().get(name, ())


@cache
def _descriptions() -> dict[str, set[str]]:
    """Each section's descriptions in the judge prompts, lower case."""
    found: dict[str, set[str]] = {}
    for name in JUDGE_TEMPLATES:
        for tag, text in re.findall(r"^<(\w+)>([^<]+)</\1>$", template(name).template, re.MULTILINE):
            found.setdefault(tag, set()).add(" ".join(text.lower().split()))
    return found


def _is_empty(content: str) -> bool:
    """Whether ``content`` says nothing: only tags, spaces and punctuation
    ("...", "<answer></answer>"). A letter, a digit or a symbol ("∞", "🎉")
    is something."""
    bare = _TAG.sub("", content) if _ALNUM.search(content) else content  # a tag has a letter
    if _ALNUM.search(bare):
        return False
    return not any(unicodedata.category(c)[0] == "S" for c in set(bare))


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
    """Remove a markdown fence that wraps the whole content, if any: a
    first line of ```` ``` ```` and no language or a markup one, a last
    ```` ``` ````, and no other fence between them."""
    if len(content) < 7 or not (content.startswith("```") and content.endswith("```")):
        return content
    first_line, newline, rest = content[3:].partition("\n")
    if not newline or first_line.strip(" \t").lower() not in _WRAPPING_FENCE_LANGUAGES:
        return content
    inner = rest[:-3]
    return content if "```" in inner else inner.strip()


def _split_areas(content: str) -> list[str]:
    """Split refinement areas into items: <area>/<item> blocks, else lines."""
    items = _area_items(content) or content.splitlines()
    areas = []
    for item in items:
        item = _BULLET.sub("", item.strip()).strip()
        if item and item.lower().rstrip(".") not in _NOT_AN_AREA:
            areas.append(item)
    return areas


def _area_items(content: str) -> list[str]:
    """The contents of the <area> and <item> blocks: each from its opening
    tag to the first closing tag of its name after it, in order, none
    inside another."""
    closes: dict[str, list[tuple[int, int]]] = {"area": [], "item": []}
    for close in _AREA_CLOSE.finditer(content):
        closes[close.group(1).lower()].append(close.span())
    starts = {name: [start for start, _ in spans] for name, spans in closes.items()}
    items, position = [], 0
    for opening in _AREA_OPEN.finditer(content):
        name = opening.group(1).lower()
        following = bisect_left(starts[name], opening.end())
        if opening.start() < position or following == len(starts[name]):
            continue
        close_start, position = closes[name][following]
        items.append(content[opening.end() : close_start])
    return items


# The streamed reply (``SynthesisReader``): any tag of the arbiter's format,
# opening or closing; the head of a tag, to tell early that a "<" starts none.
_STRUCTURE = re.compile(rf"<\s*(/)?\s*({'|'.join(_ALL_TAGS)})\b[^<>]*>", re.IGNORECASE)
_TAG_HEAD = re.compile(r"<\s*/?\s*(\w*)")
_LT_GT = re.compile("[<>]")
# The most characters the reader holds back at once (a tag not yet closed,
# spaces not yet followed by text): past it, it passes nothing more on.
HOLD_CHARS = 1000


class SynthesisReader:
    """Reads an arbiter's reply as it streams, and passes on the text of its
    synthesis as it is written, once ``decide`` allows it.

    When a ``<synthesis>`` opens outside every other block, ``decide(reply
    so far)`` is asked once whether to pass it on. ``feed(chunk)`` then
    returns the synthesis text that chunk completed; "" otherwise.

    What it passes on is only text that ``parse_arbiter`` would read as
    the start of that block's content: leading and trailing spaces are held
    back (the content is stripped), and it stops for good at the block's
    ``</synthesis>``, at any other tag of the format (so no tag, forged or
    not, is ever passed on), at a fence that may wrap the whole synthesis
    (which the parser removes), past ``HOLD_CHARS`` held back, or past
    ``MAX_REPLY_CHARS``. A "<" that may still become a tag is held back
    until the text after it tells. Whether the block is the verdict only
    the whole reply tells (a later block may replace it, the reply may be
    cut off): the caller compares what was passed on with the verdict.

    Each character is read a bounded number of times (linear time).
    """

    def __init__(self, decide: Callable[[str], bool]):
        self._decide = decide
        self.state = "sections"  # then "synthesis" (passing it on), or "done"
        self._parts: list[str] = []  # the reply so far, while in "sections"
        self._buf = ""  # what is not read yet
        self._offset = 0  # where ``_buf`` starts in the reply
        self._length = 0
        self._open: str | None = None  # the block open outside every other, in "sections"
        self._looked = (-1, 0)  # (a pending "<", where the search for "<" or ">" after it reached)
        self._started = False  # some of the synthesis was passed on

    def stop(self) -> None:
        """Pass nothing more on."""
        self.state = "done"

    def restart(self) -> None:
        """A new attempt of the call begins: its reply is read afresh, unless
        some of the last one's synthesis was passed on (then nothing more is)."""
        if self._started:
            self.stop()
        else:
            self.__init__(self._decide)

    def feed(self, chunk: str) -> str:
        if self.state == "done" or not chunk:
            return ""
        self._length += len(chunk)
        if self._length > MAX_REPLY_CHARS:  # the parser reads no further
            self.stop()
            return ""
        if self.state == "sections":
            self._parts.append(chunk)
        self._buf += chunk
        if self.state == "sections":
            self._read_sections()
        text = self._read_synthesis() if self.state == "synthesis" else ""
        if len(self._buf) > HOLD_CHARS:
            self.stop()
        return text

    def _read_sections(self) -> None:
        buf, position = self._buf, 0
        while self.state == "sections":
            lt = buf.find("<", position)
            if lt == -1:
                position = len(buf)
                break
            tag = self._tag(lt)
            if tag is None:
                position = lt
                break
            position = tag.end() if tag else lt + 1
            if tag:
                self._section_tag(tag, lt)
        self._consume(position)

    def _section_tag(self, tag: re.Match, lt: int) -> None:
        closing, name = tag.group(1), tag.group(2).lower()
        if self._open is not None:  # tags inside a block are its text
            if closing and _CLOSE[self._open].fullmatch(tag.group(0)):
                self._open = None
            return
        if closing or tag.group(0).endswith("/>"):
            return
        if name != "synthesis":
            self._open = name
            return
        prefix = "".join(self._parts)[: self._offset + lt]
        self._parts = []
        self.state = "synthesis" if self._decide(prefix) else "done"

    def _read_synthesis(self) -> str:
        buf, position, stop, ended = self._buf, 0, len(self._buf), False
        while True:
            lt = buf.find("<", position)
            if lt == -1:
                break
            tag = self._tag(lt)
            if tag is not False:  # a tag of the format ends it; one that may become one waits
                stop, ended = lt, tag is not None
                break
            position = lt + 1
        region = buf[:stop]
        start = 0 if self._started else len(region) - len(region.lstrip())
        head = region[start:]
        if not self._started and head[:1] == "`":
            wraps = _fence_wraps(head)
            if wraps or (wraps is None and ended):
                self.stop()
                return ""
            if wraps is None:
                self._consume(start)
                return ""
        text = head.rstrip()
        self._started = self._started or bool(text)
        self._consume(start + len(text))
        if ended:
            self.stop()
        return text

    def _tag(self, lt: int) -> re.Match | bool | None:
        """At the "<" at ``lt`` of the unread text: the format's tag that
        starts there, False if none does, None if only more text can tell."""
        buf, where = self._buf, self._offset + lt
        start = lt + 1
        if self._looked[0] == where:
            start = max(start, self._looked[1] - self._offset)
        if _LT_GT.search(buf, start) is None:  # the tag, if it is one, is not closed yet
            self._looked = (where, self._offset + len(buf))
            end = min(len(buf), lt + 64)
            head = _TAG_HEAD.match(buf, lt, end)
            return None if head.end() == end or head.group(1).lower() in _ALL_TAGS else False
        return _STRUCTURE.match(buf, lt) or False

    def _consume(self, count: int) -> None:
        self._buf = self._buf[count:]
        self._offset += count


def _fence_wraps(head: str) -> bool | None:
    """Whether the text starting a synthesis opens a fence that
    ``_unwrap_fence`` may remove (its first line a markup language or
    none); None until its first line is whole."""
    if len(head) < 3:
        return None if "```".startswith(head) else False
    if not head.startswith("```"):
        return False
    first_line, newline, _ = head[3:].partition("\n")
    if not newline:
        return None
    return first_line.strip(" \t").lower() in _WRAPPING_FENCE_LANGUAGES
