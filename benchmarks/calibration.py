"""Calibrated p(right) against the arbiter's own confidence, on simulated
items, through the real eval path: `llm consortium eval DATA --consortium
NAME --methods arbiter --calibrate` on the loopback simulator, through llm's
real client, then the stored map read back.

    python benchmarks/calibration.py [--items 1000] [--seed 20261206]

The world: ITEMS arithmetic questions (a fixed seed); five simulated
members, each right on an item with its stated accuracy (a fixed draw per
member and question; a wrong answer is the right one plus 1, 2 or 3, so
wrong members can agree, less often than right ones); an arbiter that picks the most common answer and
reports a confidence drawn uniformly from 0.85 to 0.95 whatever the truth
(a fixed draw per prompt): saturated, as real judges' are. Agreement (the
share of members giving the winning answer) tracks correctness, but is not
itself a probability of being right: a plurality of 2 of 5 is right far
more often than 40 % of the time.

Reported: the ECE of the arbiter's confidence and of the raw agreement
(both read as probabilities: nothing is fitted on them), and the ECE of the
calibrated p(right) on held-out folds (5 folds: each item scored by a map
fitted without it), each with a bootstrap 95 % interval; the score the fit
kept; and the stored map. The goal: calibrated ECE under 0.05, the
confidence's not.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-calibration-")
os.environ.pop("OPENAI_API_KEY", None)
# The simulator is plain HTTP on 127.0.0.1: a CA bundle of one certificate
# spares llm's OpenAI client ~30 ms of CPU loading the system's on every call.
TRUSTS_NOTHING = Path(__file__).resolve().parent.parent / "tests" / "trusts-nothing.pem"
if TRUSTS_NOTHING.exists():
    os.environ["SSL_CERT_FILE"] = str(TRUSTS_NOTHING)

from click.testing import CliRunner  # noqa: E402
from llm.cli import cli  # noqa: E402

from llm_consortium.evaluation.simeval import REFINE_MARK, SimulatedPanel, draw, fenced_answers  # noqa: E402
from llm_consortium.evaluation.simulator import SimProvider, arbiter_xml  # noqa: E402
from llm_consortium.storage.store import load_calibration  # noqa: E402

MEMBERS = {"sim-65": 0.65, "sim-60": 0.60, "sim-55": 0.55, "sim-50": 0.50, "sim-45": 0.45}
JUDGE = "sim-judge"
GOAL = 0.05


class SaturatedPanel(SimulatedPanel):
    """The members of ``SimulatedPanel``, whose wrong answers are spread over
    three wrong numbers; a judge that picks the most common answer with a
    confidence in 0.85-0.95 that knows nothing of the truth."""

    def answer(self, model: str, asked: str, sample: int = 1) -> str:
        truth = self.truth[asked.split(REFINE_MARK)[0]]
        if self.is_right(model, asked, sample):
            return truth
        return str(int(truth) + 1 + int(3 * draw("wrong", model, asked, sample)))

    def judge(self, request) -> str:
        chosen = Counter(fenced_answers(request.user).values()).most_common(1)[0][0]
        return arbiter_xml(f"<answer>{chosen}</answer>", round(0.85 + 0.1 * draw("confidence", request.user), 3))


def dataset(items: int, seed: int, path: Path) -> dict[str, str]:
    rng = random.Random(seed)
    truth = {}
    while len(truth) < items:
        a, b = rng.randrange(100, 10000), rng.randrange(100, 10000)
        truth[f"What is {a} plus {b}? Give your final answer inside <answer></answer>."] = str(a + b)
    path.write_text("".join(json.dumps({"prompt": p, "answer": t}) + "\n" for p, t in truth.items()))
    return truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()
    data = Path(os.environ["LLM_USER_PATH"]) / "items.jsonl"
    truth = dataset(args.items, args.seed, data)
    panel = SaturatedPanel(truth, MEMBERS)
    sim = SimProvider()
    runner = CliRunner()
    try:
        panel.add_to(sim, judge=JUDGE)
        members = [a for m in MEMBERS for a in ("-m", m)]
        saved = runner.invoke(cli, ["consortium", "save", "five", *members, "--arbiter", JUDGE, "--max-iterations",
                                    "1"], catch_exceptions=False)
        assert saved.exit_code == 0, saved.output
        started = time.perf_counter()
        result = runner.invoke(cli, ["consortium", "eval", str(data), "--consortium", "five", "--methods", "arbiter",
                                     "--samples", "1", "--max-concurrency", "8", "--calibrate", "--json"],
                               catch_exceptions=False)
        seconds = time.perf_counter() - started
    finally:
        sim.close()
    if result.exit_code != 0:
        sys.exit(f"eval failed ({result.exit_code}): {result.output}")
    report = json.loads(result.stdout)
    fit = report["calibrated"][0]
    row = next(r for r in report["results"] if r["name"] == "arbiter")
    stored = load_calibration("five")["methods"]["arbiter"]

    def cell(ece):
        low, high = ece["interval_95"]
        return f"{ece['ece']:.3f} [{low:.3f}, {high:.3f}]"

    print(f"{args.items} items, seed {args.seed}, {len(MEMBERS)} members ({', '.join(MEMBERS)}), "
          f"eval with --calibrate in {seconds:.0f} s; {report['new_calls']} model calls")
    print(f"arbiter method accuracy {row['accuracy']:.3f}; items calibrated on: {fit['items']}")
    print()
    print("| signal | ECE [95% bootstrap interval] | Brier |")
    print("|---|---|---|")
    print(f"| arbiter's own confidence (raw) | {cell(fit['before']['confidence'])} | |")
    print(f"| measured agreement (raw) | {cell(fit['before']['agreement'])} | |")
    for score, ece in fit["after_held_out"].items():
        kept = " (kept)" if score == fit["score"] else ""
        print(f"| calibrated p(right), {score} score, held-out folds{kept} | {cell(ece)} | "
              f"{fit['brier_held_out'][score]:.4f} |")
    print()
    print("stored map (score -> p(right)):", json.dumps(stored["points"]))
    calibrated_ece = fit["after_held_out"][fit["score"]]["ece"]
    confidence_ece = fit["before"]["confidence"]["ece"]
    met = calibrated_ece < GOAL <= confidence_ece
    print(f"goal (calibrated ECE < {GOAL}, the raw confidence's not): {'met' if met else 'NOT met'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
