"""Members' answers as short comparable values: extraction, normalisation, the majority vote.

Everything here works on strings already in memory; nothing does I/O and
nothing raises on model text. Majority vote / self-consistency (Wang et
al., arXiv 2203.11171): extract each member's short final answer,
normalise it, take the most common.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

# --------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------

#: Texts of at most this many words are taken whole when no marker is found.
SHORT_TEXT_WORDS = 6
#: "yes, because ..." counts as "yes" only when the text is at most this long.
YES_NO_MAX_WORDS = 12

_ANSWER_TAG = re.compile(r"<(/?)answer>", re.IGNORECASE)
# "Answer: X", "Final answer: X", "**Answer:** X", "- **Final Answer**: X"
_ANSWER_LINE = re.compile(
    r"^[ \t>#*_\-]*(?:final[ \t]+)?answer[ \t*_]*[:：][ \t*_]*(?P<value>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
# "The answer is X", "the final answer is: X", "The correct option is X"
_ANSWER_IS = re.compile(
    r"\b(?:final[ \t]+|correct[ \t]+)?(?:answer|option|choice)[ \t]+is[ \t]*[:：]?[ \t*_]*"
    r"(?P<value>[^\s,;.][^\n]*)",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\s*\{")
_SENTENCE_END = re.compile(r"\.\s")
_NEXT_LINE = re.compile(r"\s*([^\n]*)")


def extract_answer(text: str) -> str | None:
    """Return a member's final short answer, normalised, or None.

    Looked for in this order:

    1. the last non-empty ``<answer>...</answer>`` block (case-insensitive; an
       unclosed final ``<answer>`` counts up to the end of the text). If the
       block itself contains a marker such as "The answer is 42." the marked
       value is used;
    2. the last marker in the text: a line ``Answer: X`` / ``Final answer: X``
       / ``**Answer:** X`` (an empty one takes the next non-blank line),
       ``The answer is X.`` or ``\\boxed{X}``;
    3. the whole text when it is at most six words long.

    Long prose with no marker returns None: it cannot be extracted reliably.
    The result goes through :func:`normalise_answer`.
    """
    written = written_answer(text)
    return None if written is None else normalise_answer(written)


def written_answer(text: str) -> str | None:
    """A member's final short answer as it wrote it (found as
    :func:`extract_answer` says, not normalised), or None.

    This is what a person is shown: "42.0 km" or "Paris", not the "42" or
    "paris" that answers are compared by.
    """
    if not isinstance(text, str):
        return None
    block = _last_answer_block(text)
    if block is not None:
        marked = _last_marker(block)
        return marked if marked is not None else block
    marked = _last_marker(text)
    if marked is not None:
        return marked
    bare = _ANSWER_TAG.sub(" ", text).strip()  # only empty blocks are left
    if len(bare.split()) <= SHORT_TEXT_WORDS:
        return bare
    return None


_ANY_ANSWER_TAG = re.compile(r"<\s*/?\s*answer\s*>", re.IGNORECASE)


def without_answer_tags(text: str) -> str:
    """``text`` as the person asking should read it: the ``<answer>`` tags
    the vote asks members for are dropped (``< /Answer >`` too), their
    content kept. One pass, whatever the text holds."""
    return _ANY_ANSWER_TAG.sub("", text).strip()


def _last_answer_block(text: str) -> str | None:
    """Content of the last non-empty <answer> block, or of a trailing unclosed one.

    One pass over the tags, so hostile text full of unclosed tags stays linear.
    """
    block = None
    open_end = None
    for tag in _ANSWER_TAG.finditer(text):
        if not tag.group(1):
            open_end = tag.end()
        elif open_end is not None:
            block = text[open_end:tag.start()].strip() or block
            open_end = None
    if open_end is not None:
        block = text[open_end:].strip() or block
    return block


def _last_marker(text: str) -> str | None:
    """The value after the last answer marker in ``text``, or None."""
    candidates: list[tuple[int, str]] = []
    for match in _ANSWER_LINE.finditer(text):
        value = match.group("value").strip(" \t*_")
        if not value:  # "**Final Answer:**" with the value on the next line
            value = _NEXT_LINE.match(text, match.end()).group(1).strip()
        if value:
            candidates.append((match.start(), _first_sentence(value)))
    for match in _ANSWER_IS.finditer(text):
        candidates.append((match.start(), _first_sentence(match.group("value"))))
    boxes = list(_BOXED.finditer(text))
    if boxes:  # only the last one: an unclosed last box means a cut-off answer
        value = _balanced_braces(text, boxes[-1].end())
        if value is not None:
            candidates.append((boxes[-1].start(), value))
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


def _first_sentence(value: str) -> str:
    """Cut ``value`` at the first full stop followed by a space ("42. Because...")."""
    return _SENTENCE_END.split(value, maxsplit=1)[0].strip()


def _balanced_braces(text: str, start: int) -> str | None:
    """Text from ``start`` up to the brace closing an already-open ``{``."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------

_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_SPACES = re.compile(r"\\[,;:! ]")
_QUOTES = "\"'“”‘’«»"

_LETTER_ALONE = re.compile(r"^\(?([a-j])\)?[.:]?$", re.IGNORECASE)
_LETTER_OPTION = re.compile(r"^(?:option|choice)\s*\(?([a-j])\)?(?:[\s.:)\-].*)?$", re.IGNORECASE | re.DOTALL)
_LETTER_PAREN_TEXT = re.compile(r"^\(?([a-j])\)\s*\S.*$", re.IGNORECASE | re.DOTALL)
_LETTER_DOT_TEXT = re.compile(r"^([A-J])[.:]\s+\S.*$", re.DOTALL)  # uppercase only: "a. cat" is prose

_YES_NO = re.compile(r"^(yes|no)\s*(?:$|[,.;:!—–\-])", re.IGNORECASE)

_UNIT_TOKEN = r"(?:[°$€£¥₹]|[^\W\d_])[^\s\d]*"
_NUMBER = re.compile(
    r"^(?:[a-z]\s*=\s*)?"                          # optional "x = "
    r"(?P<sign>[-+])?\s*"
    r"(?:[$€£¥₹]|usd|eur|gbp)?\s*"                 # optional currency
    r"(?P<sign2>[-+])?"
    r"(?:(?P<frac>\d+\s*/\s*\d+)"                  # simple fraction, kept as a/b
    r"|(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d{1,2})?)"
    rf"\s*(?:%|{_UNIT_TOKEN}(?:\s+{_UNIT_TOKEN}){{0,2}})?$",  # optional unit / percent
    re.IGNORECASE,
)
_LEADING_ARTICLES = re.compile(r"^(?:(?:the|a|an)\s+)+")


def normalise_answer(s: str) -> str | None:
    """Normalise a short answer so equal answers compare equal; None when empty.

    * multiple-choice letter A-J ("B", "(b)", "B)", "b.", "Option B",
      "B) Paris", "B. Paris") -> "B". A lone "A"/"a" is the letter; "a cat"
      is a phrase;
    * yes/no ("Yes.", "no", "yes, because ..." up to twelve words) -> "yes"/"no";
    * a single number with optional sign, currency, percent or up to three unit
      words -> its plain decimal form: "1,234.50" -> "1234.5", "$12" -> "12",
      "12 km" -> "12", "3.0" -> "3", "1e3" -> "1000". Simple fractions stay
      as fractions ("1/2"); :func:`is_correct` compares them numerically;
    * anything else -> a phrase: NFKC, lowercased, punctuation removed (dashes
      become spaces), whitespace collapsed, leading "the"/"a"/"an" dropped.
    """
    if not isinstance(s, str):
        return None
    text = _clean(s)
    if not text:
        return None
    letter = _as_letter(text)
    if letter is not None:
        return letter
    yes_no = _YES_NO.match(text)
    if yes_no and len(text.split()) <= YES_NO_MAX_WORDS:
        return yes_no.group(1).lower()
    number = _as_number_string(text)
    if number is not None:
        return number
    return _as_phrase(text)


def _clean(s: str) -> str:
    """NFKC, unicode minus, light LaTeX and markdown removal, outer quotes and full stops."""
    text = unicodedata.normalize("NFKC", s).replace("\u2212", "-")
    text = _LATEX_TEXT.sub(r"\1", text)
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    text = _LATEX_SPACES.sub("", text).replace("\\$", "$").replace("\\%", "%")
    text = text.replace("*", "").replace("`", "")
    text = text.strip()
    if len(text) > 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()  # inline maths "$x$", not a currency sign
    text = text.strip(_QUOTES + " \t\n")
    return text.rstrip(".!?;, \t\n").strip(_QUOTES + " \t\n")


def _as_letter(text: str) -> str | None:
    """The multiple-choice letter ``text`` names, uppercase, or None."""
    for pattern in (_LETTER_ALONE, _LETTER_OPTION, _LETTER_PAREN_TEXT, _LETTER_DOT_TEXT):
        match = pattern.match(text)
        if match:
            return match.group(1).upper()
    return None


def _as_number_string(text: str) -> str | None:
    """Canonical string of the single number in ``text`` (with units), or None."""
    match = _NUMBER.match(text)
    if not match:
        return None
    negative = "-" in (match.group("sign"), match.group("sign2"))
    if match.group("frac") is not None:
        numerator, denominator = (p.strip() for p in match.group("frac").split("/"))
        return f"{'-' if negative else ''}{int(numerator)}/{int(denominator)}"
    value = Decimal(match.group("num").replace(",", "") + (match.group("exp") or ""))
    if value == 0:
        return "0"
    body = format(value.normalize(), "f")
    return f"-{body}" if negative else body


def _as_phrase(text: str) -> str | None:
    """Lowercased phrase without punctuation or leading articles; None if empty."""
    chars = []
    for ch in text.lower():
        category = unicodedata.category(ch)
        if category == "Pd":
            chars.append(" ")
        elif not category.startswith("P"):
            chars.append(ch)
    phrase = " ".join("".join(chars).split())
    phrase = _LEADING_ARTICLES.sub("", phrase)
    return phrase or None


def _parse_number(s: str) -> Fraction | None:
    """Exact value of a normalised number ("12", "-0.5", "1/2"), or None."""
    if re.fullmatch(r"-?\d+(?:\.\d+)?", s):
        return Fraction(s)
    match = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if match and int(match.group(2)) != 0:
        return Fraction(int(match.group(1)), int(match.group(2)))
    return None


def is_correct(predicted: str | None, expected: str) -> bool:
    """Exact match after :func:`normalise_answer` on both sides.

    When both sides are numbers (fractions included) they are compared
    numerically with an absolute tolerance of 1e-9, so "0.5" matches "1/2".
    A missing prediction is never correct.
    """
    if predicted is None:
        return False
    got, want = normalise_answer(predicted), normalise_answer(expected)
    if got is None or want is None:
        return False
    got_number, want_number = _parse_number(got), _parse_number(want)
    if got_number is not None and want_number is not None:
        return abs(got_number - want_number) <= Fraction(1, 10**9)
    return got == want


# --------------------------------------------------------------------------
# Majority vote
# --------------------------------------------------------------------------


@dataclass
class Tally:
    """Result of a majority vote over members' extracted answers.

    ``share`` is the winner's count divided by the number of members,
    including members whose answer could not be extracted (0.0 on a tie or
    with no answers). ``counts`` is ordered most common first.
    """

    winner: str | None
    share: float
    counts: dict[str, int] = field(default_factory=dict)
    tie: bool = False
    extracted: int = 0


def tally(answers: list[str | None]) -> Tally:
    """Count the answers (None = not extracted) and pick the strict plurality winner."""
    counter = Counter(a for a in answers if a is not None)
    counts = dict(counter.most_common())
    extracted = sum(counts.values())
    if not counts:
        return Tally(winner=None, share=0.0, counts={}, tie=False, extracted=0)
    ranked = list(counts.items())
    top_answer, top_count = ranked[0]
    tie = len(ranked) > 1 and ranked[1][1] == top_count
    if tie:
        return Tally(winner=None, share=0.0, counts=counts, tie=True, extracted=extracted)
    return Tally(
        winner=top_answer,
        share=top_count / len(answers),
        counts=counts,
        tie=False,
        extracted=extracted,
    )
