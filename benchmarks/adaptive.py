"""Adaptive panels against the full panel, on simulated members of stated
accuracy and price: 5 members, 1,000 multiple-choice items (seed 2026),
90 % easy (each member right 95 % of the time) and 10 % hard (50 %); a
wrong answer is one of the three wrong letters, at random.

    python benchmarks/adaptive.py [--plot docs/adaptive.png] [--items 1000] [--seed 2026]

Each item is run by the package's own engine (``ConsortiumOrchestrator``
with the vote method, as ``llm consortium run`` makes it), once with the
whole panel and once with ``adaptive=True``, at the confidence thresholds
below, one round each (``max_iterations=1``: the members answer once): the
stages, their order, the posterior and the vote are the package's real code. Only the model calls are simulated, in process
(``call=``, the hook ``eval`` uses to replay cached replies): each member's
answer to an item is drawn once, so both modes see the same answers; a
member's reply is priced by genai-prices as the provider model named
below, for the prompt's tokens (estimated) and ``REPLY_TOKENS`` tokens of
reasoning. The simulated arbiter, asked when the vote cannot decide, picks
the most common answer (the first on a tie).

It prints accuracy with a 95 % Wilson interval, dollars and member calls
per item, and arbiter calls, for each mode; docs/benchmarks.md has the
table and the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-adaptive-")
os.environ.pop("OPENAI_API_KEY", None)

# member: the provider model it is priced as (cheapest first here; the panel lists them dearest first)
MEMBERS = {"sim-e": "gpt-4o", "sim-d": "gpt-4.1", "sim-c": "gpt-4.1-mini", "sim-b": "gpt-4o-mini",
           "sim-a": "gpt-4.1-nano"}
JUDGE = ("sim-judge", "gpt-4.1")
EASY, HARD = 0.95, 0.50  # each member's chance of being right
HARD_SHARE = 0.10
REPLY_TOKENS = 300  # a member's reply: reasoning, then <answer>X</answer>
JUDGE_REPLY_TOKENS = 400
THRESHOLDS = (0.8, 0.95)
LETTERS = "ABCD"


def write_models() -> None:
    """The panel as llm models (never called: the calls are simulated in process)."""
    lines = []
    for name, priced_as in [*MEMBERS.items(), JUDGE]:
        lines += [f"- model_id: {name}", f"  model_name: {priced_as}", "  api_base: http://127.0.0.1:9/v1"]
    (Path(os.environ["LLM_USER_PATH"]) / "extra-openai-models.yaml").write_text("\n".join(lines) + "\n")


def make_items(count: int, seed: int) -> list[dict]:
    """Each item's right letter, whether it is hard, and every member's answer (drawn once)."""
    rng = random.Random(seed)
    items = []
    for i in range(count):
        truth = rng.choice(LETTERS)
        hard = rng.random() < HARD_SHARE
        answers = {}
        for member in MEMBERS:
            right = rng.random() < (HARD if hard else EASY)
            answers[member] = truth if right else rng.choice([x for x in LETTERS if x != truth])
        items.append({"prompt": f"Question {i}: which option is right, A, B, C or D?", "truth": truth,
                      "hard": hard, "answers": answers})
    return items


class Simulated:
    """A ``Caller`` (see ``core.judging``): members answer as drawn, the arbiter picks the most common answer."""

    def __init__(self, items: list[dict]):
        self.by_prompt = {item["prompt"]: item for item in items}
        self.calls = Counter()

    async def __call__(self, handle, *, role: str, instance: int, prompt: str, system=None, outcome=None, **_):
        from llm_consortium.core.calls import CallOutcome
        from llm_consortium.core.pricing import estimated_tokens, priced

        outcome = outcome or CallOutcome()
        self.calls[role] += 1
        if role == "member":
            text = f"Reasoning about the options.\n<answer>{self.by_prompt[prompt]['answers'][handle.model_id]}</answer>"
            tokens = REPLY_TOKENS
        else:
            from llm_consortium.evaluation.simulator import arbiter_xml

            shown = re.findall(r"<answer>([A-D])</answer>", prompt)
            chosen = Counter(shown).most_common(1)[0][0] if shown else "A"
            text, tokens = arbiter_xml(f"<answer>{chosen}</answer>", 0.9), JUDGE_REPLY_TOKENS
        outcome.text, outcome.attempts = text, 1
        outcome.usage = priced(handle.model, estimated_tokens((system or "") + prompt), tokens)
        return outcome


async def run_mode(items: list[dict], threshold: float, adaptive: bool) -> dict:
    from llm_consortium import ConsortiumOrchestrator
    from llm_consortium.core.answers import extract_answer, is_correct
    from llm_consortium.core.config import ConsortiumConfig

    config = ConsortiumConfig(models=list(MEMBERS), arbiter=JUDGE[0], method="vote",
                              confidence_threshold=threshold, adaptive=adaptive, max_iterations=1, retry_backoff=0)
    caller = Simulated(items)
    orchestrator = ConsortiumOrchestrator(config=config, call=caller)
    right, dollars, decisive = [], 0.0, 0
    for item in items:
        result = await orchestrator.orchestrate(item["prompt"])
        right.append(is_correct(extract_answer(result["synthesis"]["synthesis"]), item["truth"]))
        dollars += result["metadata"]["usage"]["cost_usd"]
        decisive += bool(result["metadata"]["decisive"])
    n = len(items)
    hard = [r for r, item in zip(right, items) if item["hard"]]
    return {"mode": ("adaptive" if adaptive else "full panel"), "threshold": threshold, "accuracy": sum(right) / n,
            "interval": wilson(sum(right), n), "hard": sum(hard) / len(hard), "dollars": dollars / n,
            "member_calls": caller.calls["member"] / n, "arbiter_calls": caller.calls["arbiter"] / n,
            "decisive": decisive / n}


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def table(rows: list[dict]) -> str:
    lines = ["| mode | threshold | accuracy (95 % CI) | hard items | $ per item | member calls per item "
             "| arbiter calls per item | stopped early |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        low, high = r["interval"]
        lines.append(
            f"| {r['mode']} | {r['threshold']:.2f} | {r['accuracy']:.3f} ({low:.3f}–{high:.3f}) | {r['hard']:.2f} "
            f"| ${r['dollars']:.6f} | {r['member_calls']:.2f} | {r['arbiter_calls']:.2f} | {r['decisive']:.0%} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for r in rows:
        low, high = r["interval"]
        ax.errorbar(r["dollars"] * 1000, r["accuracy"], yerr=[[r["accuracy"] - low], [high - r["accuracy"]]],
                    fmt="o" if r["mode"] == "full panel" else "s", capsize=4,
                    label=f"{r['mode']}, threshold {r['threshold']:.2f} ({r['member_calls']:.2f} member calls)")
    ax.set_xlabel("dollars per 1,000 items")
    ax.set_ylabel("accuracy (95 % interval)")
    ax.set_title("Full panel vs --adaptive: 5 simulated members, 1,000 items")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    write_models()
    items = make_items(args.items, args.seed)
    print(f"{args.items} items, seed {args.seed}: {sum(i['hard'] for i in items)} hard")
    rows = []
    for threshold in THRESHOLDS:
        for adaptive in (False, True):
            rows.append(asyncio.run(run_mode(items, threshold, adaptive)))
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
