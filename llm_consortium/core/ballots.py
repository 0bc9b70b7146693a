"""Blind judging: neutral answer labels, peer-review ballots, the Borda count and its bootstrap.

Everything here works on strings and lists already in memory; nothing does
I/O and nothing raises on model text (only on bad programmer arguments,
such as a negative label index). Peer review (karpathy/llm-council): judges
rank anonymised "Response X" labels ending with ``FINAL RANKING:``; ballots
are combined with a Borda count normalised by ballot length, and a
bootstrap over ballots gives an interval for each score.
"""

from __future__ import annotations

import random
import re
from collections import Counter


def label(i: int) -> str:
    """Anonymous label for the i-th answer: 0 -> "Response A", 26 -> "Response AA".

    Letters follow spreadsheet columns, so there is no limit at 26 answers.
    """
    if i < 0:
        raise ValueError(f"label index must be >= 0, got {i}")
    letters = ""
    n = i + 1
    while n:
        n, remainder = divmod(n - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return f"Response {letters}"


_RANKING_HEADER = re.compile(
    r"final[ \t]+ranking[ \t*_]*:"                                 # "FINAL RANKING:" anywhere
    r"|^[ \t>#*_]*final[ \t]+ranking[ \t*_#]*$",                   # or a heading line alone
    re.IGNORECASE | re.MULTILINE,
)
_LIST_MARKER = r"[ \t>]*(?:(?:\#?\d+[ \t]*[.):\-]|[-*+•])[ \t]*)?[*_`\[( \t]*"
_LIST_ITEM = re.compile(r"^[ \t>]*(?:\#?\d+[ \t]*[.):\-]|[-*+•])[ \t]")


def label_pattern(labels: list[str]) -> re.Pattern[str]:
    """Regex matching any label as a whole token, longest first, case-insensitive."""
    alternatives = [
        r"\s+".join(re.escape(word) for word in lab.split())
        for lab in sorted(set(labels), key=len, reverse=True)
    ]
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def parse_ballot(text: str, labels: list[str]) -> list[str] | None:
    """Read a judge's ranking from the LAST ``FINAL RANKING:`` section in ``text``.

    Tolerates markdown (``**FINAL RANKING:**``), list styles (``1. Response C``,
    ``1) Response C``, ``- Response C``, ``1. **Response C**`` or the label
    alone) and text after the label on a line; a ranking written on the header
    line itself ("FINAL RANKING: Response B > Response A") is read too. Labels
    match whole tokens case-insensitively, so "Response A" never matches inside
    "Response AA". Unknown labels are ignored and repeats dropped (first wins).
    Lines before the first entry are skipped; after it, the list ends at the
    first non-blank line that is neither an entry nor a numbered/bulleted item.

    Returns the (possibly partial) ranking using the spelling in ``labels``, or
    None when there is no section or fewer than two valid labels (one when
    ``labels`` has a single entry).
    """
    if not isinstance(text, str) or not labels:
        return None
    headers = list(_RANKING_HEADER.finditer(text))
    if not headers:
        return None
    pattern = label_pattern(labels)
    canonical = {" ".join(lab.split()).casefold(): lab for lab in labels}
    entry = re.compile("^" + _LIST_MARKER + "(" + pattern.pattern + ")", re.IGNORECASE)

    def to_label(found: str) -> str:
        return canonical[" ".join(found.split()).casefold()]

    after = text[headers[-1].end():]
    header_rest, _, body = after.partition("\n")
    ranking = [to_label(m.group(0)) for m in pattern.finditer(header_rest)]
    for line in body.split("\n"):
        if not line.strip():
            continue
        match = entry.match(line)
        if match:
            ranking.append(to_label(match.group(1)))
        elif ranking and not _LIST_ITEM.match(line):
            break
    ranking = list(dict.fromkeys(ranking))
    needed = 2 if len(labels) >= 2 else 1
    return ranking if len(ranking) >= needed else None


def borda(ballots: list[list[str]], candidates: list[str]) -> dict[str, float]:
    """Borda score in [0, 1] per candidate, normalised by ballot length.

    A ballot ranking n candidates gives the one at 0-based rank r the score
    (n-1-r)/(n-1): first gets 1.0, last gets 0.0. Entries that are not
    candidates and repeats are dropped first; ballots left with fewer than two
    entries carry no preference and are skipped. A candidate's score is the
    mean over the ballots that include it, so a judge that cannot rank its own
    answer (a ballot one shorter) counts as much as any other.

    A candidate that no ballot ranks gets 0.0, the same as always being last:
    check the ballots if that difference matters.
    """
    allowed = set(candidates)
    totals: dict[str, float] = {c: 0.0 for c in candidates}
    appearances: Counter[str] = Counter()
    for ballot in ballots:
        ranked = list(dict.fromkeys(c for c in ballot if c in allowed))
        n = len(ranked)
        if n < 2:
            continue
        for rank, candidate in enumerate(ranked):
            totals[candidate] += (n - 1 - rank) / (n - 1)
            appearances[candidate] += 1
    return {
        c: totals[c] / appearances[c] if appearances[c] else 0.0 for c in candidates
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0 <= q <= 1) of an ascending list, interpolated
    linearly; 0.0 when the list is empty. The bootstrap intervals here and
    in ``llm consortium eval``'s report both read their tails with it."""
    if not sorted_values:
        return 0.0
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_intervals(
    ballots: list[list[str]],
    candidates: list[str],
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.9,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each candidate's :func:`borda` score.

    Ballots are resampled with replacement ``rounds`` times with
    ``random.Random(seed)``, so the result is deterministic for a seed.
    Overlapping intervals mean there is no clear winner. With no ballots every
    interval is (0.0, 0.0).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if not ballots:
        return {c: (0.0, 0.0) for c in candidates}
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {c: [] for c in candidates}
    for _ in range(rounds):
        resample = rng.choices(ballots, k=len(ballots))
        for candidate, score in borda(resample, candidates).items():
            samples[candidate].append(score)
    tail = (1 - level) / 2
    intervals = {}
    for candidate, values in samples.items():
        values.sort()
        intervals[candidate] = (percentile(values, tail), percentile(values, 1 - tail))
    return intervals
