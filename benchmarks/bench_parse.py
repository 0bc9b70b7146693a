"""Reading hostile arbiter replies: seconds to parse a reply of about 1 MB
(``MAX_REPLY_CHARS``, the most that is read) that repeats one pattern, as
``parse_arbiter`` and as the groups that agreement reads (``parse_groups``).

    python benchmarks/bench_parse.py

Each pattern is repeated to 1,000,000 characters and placed three ways: the
whole reply, inside a well-formed reply's <synthesis>, and before one. The
material a verdict may quote is the most an arbiter is shown: 64 answers of
``MAX_FORWARDED_CHARS`` each (its words are read only when a synthesis
shares a run of words with the instructions). The target is under 1 s for
each; a reply of 2,000,000 characters is cut to the
first 1,000,000 before reading, so it costs no more. Before parsing was made
linear, 320 KB of "<think>a</think>" took 38 s.
"""

import random
import time

from llm_consortium.core.agreement import parse_groups
from llm_consortium.core.parsing import MAX_REPLY_CHARS, parse_arbiter
from llm_consortium.core.prompts import MAX_FORWARDED_CHARS, NO_SYNTHESIS, reminder
from llm_consortium.evaluation.simulator import arbiter_xml

PATTERNS = {
    "<think>a</think>": "<think>a</think>",
    "<think> unclosed": "<think>",
    "<synthesis>": "<synthesis>",
    "<synthesis>a</synthesis>": "<synthesis>a</synthesis>",
    "</synthesis>": "</synthesis>",
    "<synthesis (no >)": "<synthesis ",
    "<synthesis/>": "<synthesis/>",
    "< alone": "<",
    "<groups> lines": "<groups>Response A, Response B\n",
    "groups lines": "Response Z, Response Y\n",
    "<area>": "<area>",
    "<area>a</area>": "<area>a</area>",
    "``` and tabs": "```\n \t \t \t",
    "digits": "1234567890",
    "words": "plain words ",
    "reminder echo": reminder(NO_SYNTHESIS),
}
GROUPS = [["Response A", "Response B"], ["Response C"]]


def material() -> list[str]:
    """A question and 64 answers of ``MAX_FORWARDED_CHARS`` random words."""
    rng = random.Random(19)
    vocabulary = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(5000)]
    answers = [" ".join(rng.choices(vocabulary, k=MAX_FORWARDED_CHARS // 5))[:MAX_FORWARDED_CHARS] for _ in range(64)]
    return ["What is the capital of France?", *answers]


def seconds(function, text: str) -> float:
    started = time.perf_counter()
    function(text)
    return time.perf_counter() - started


def placed(pattern: str, size: int) -> dict[str, str]:
    """The pattern repeated to ``size`` characters, as a whole reply, inside
    a well-formed reply's synthesis, and before one."""
    filler = (pattern * (size // len(pattern) + 1))[:size]
    return {
        "alone": filler,
        "in synthesis": arbiter_xml(filler, groups=GROUPS),
        "before": filler + arbiter_xml("s", groups=GROUPS),
    }


def main():
    print(f"{'pattern':<26} {'placed':<13} {'chars':>10} {'parse s':>8} {'groups s':>9}")
    slowest = 0.0
    quoted = material()
    rows = [(name, pattern, MAX_REPLY_CHARS) for name, pattern in PATTERNS.items()]
    rows.append(("<think>a</think> (cut)", "<think>a</think>", 2 * MAX_REPLY_CHARS))
    for name, pattern, size in rows:
        for where, text in placed(pattern, size).items():
            parse = seconds(lambda t: parse_arbiter(t, material=quoted), text)
            groups = seconds(lambda t: parse_groups(t, 3), text)
            slowest = max(slowest, parse, groups)
            print(f"{name:<26} {where:<13} {len(text):>10,} {parse:>8.3f} {groups:>9.3f}")
    print(f"slowest: {slowest:.3f} s ({'under' if slowest < 1 else 'OVER'} the 1 s target)")


if __name__ == "__main__":
    main()
