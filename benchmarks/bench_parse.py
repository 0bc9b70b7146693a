"""Reading hostile arbiter replies: seconds to parse a reply that repeats
one section's opening tag N times before a well-formed reply (with and
without a closing tag after them), and to read its groups.

    python benchmarks/bench_parse.py

Each block's content is cut only when it is the candidate being read, so
the time grows about linearly with N.
"""

import time

from llm_consortium.core.agreement import parse_groups
from llm_consortium.core.parsing import parse_arbiter
from llm_consortium.evaluation.simulator import arbiter_xml


def seconds(function, text: str) -> float:
    started = time.perf_counter()
    function(text)
    return time.perf_counter() - started


def main():
    reply = arbiter_xml("s", groups=[["Response A", "Response B"], ["Response C"]])
    print(f"{'tag':<10} {'N':>8} {'closed':>7} {'parse s':>8} {'groups s':>9}")
    for tag in ("analysis", "groups", "synthesis"):
        for n in (20_000, 200_000):
            for tail in ("", f"</{tag}>"):
                text = f"<{tag}>" * n + tail + reply
                parse = seconds(parse_arbiter, text)
                groups = seconds(lambda t: parse_groups(t, 3), text)
                print(f"{tag:<10} {n:>8,} {'yes' if tail else 'no':>7} {parse:>8.2f} {groups:>9.2f}")


if __name__ == "__main__":
    main()
