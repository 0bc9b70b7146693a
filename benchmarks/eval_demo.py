"""`llm consortium eval` on the shipped 40-item dataset against simulated
members of known accuracy, through llm's real client, run twice: the second
run is replayed from the cache and makes no model call.

    python benchmarks/eval_demo.py [--plot docs/eval.png]

The members (llm_consortium/evaluation/simeval.py) are right on an item with their stated
accuracy, each answer a fixed draw per model, question and sample; they are
priced as the provider models named below (genai-prices, by the name their
provider knows) and answer after the stated latency. The simulated judge
picks the most common answer and reports a saturated confidence (0.85 to
0.95, or 0.6, which asks for another round, when no answer has more than half the votes);
as council reviewers the members rank right answers first. The table shows
the eval at work on members whose quality is known, not the quality of any
real model.
"""

import os
import sys
import tempfile

os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-eval-")
os.environ.pop("OPENAI_API_KEY", None)

from click.testing import CliRunner  # noqa: E402

from llm_consortium.evaluation.evaluate import read_dataset, sample_path  # noqa: E402
from llm_consortium.faces.eval_command import eval_command  # noqa: E402
from llm_consortium.evaluation.simeval import SimulatedPanel  # noqa: E402
from llm_consortium.evaluation.simulator import SimProvider  # noqa: E402

# name: (accuracy, the provider model it is priced as, seconds per reply)
MEMBERS = {
    "sim-90": (0.90, "gpt-4o", 1.2),
    "sim-75": (0.75, "gpt-4.1-mini", 0.6),
    "sim-70": (0.70, "gpt-4o-mini", 0.5),
    "sim-60": (0.60, "gpt-4.1-nano", 0.3),
}
JUDGE = ("sim-judge", "gpt-4.1", 0.8)


def judge_confidence(share: float) -> float:
    return 0.6 if share <= 0.5 else round(0.85 + 0.1 * share, 3)


def main():
    truth = {item.prompt: item.answer for item in read_dataset(sample_path())}
    panel = SimulatedPanel(truth, {price: p for p, price, _ in MEMBERS.values()}, confidence=judge_confidence)
    sim = SimProvider()
    try:
        for name, (_, price, latency) in MEMBERS.items():
            sim.add(name, reply=panel.member, model_name=price, latency=latency)
        name, price, latency = JUDGE
        sim.add(name, reply=panel.judge, model_name=price, latency=latency)
        # 8 calls at a time, so that 2 CPU cores keep up and seconds reflect the latencies
        args = ["--sample", *[a for m in MEMBERS for a in ("-m", m)], "--arbiter", name, "--max-concurrency", "8"]
        for attempt, extra in ((1, sys.argv[1:]), (2, [])):  # --plot FILE on the first run
            before = len(sim.requests)
            result = CliRunner().invoke(eval_command, args + extra)
            print(f"run {attempt}: {len(sim.requests) - before} requests to the provider")
            print(result.stdout)
    finally:
        sim.close()


if __name__ == "__main__":
    main()
