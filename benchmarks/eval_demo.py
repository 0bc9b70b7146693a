"""`llm consortium eval` on the shipped dataset against simulated members of
known accuracy (right on an item with probability p, fixed per item by a hash),
run twice: the second run is replayed from the cache and makes no model call.

    python benchmarks/eval_demo.py

The simulated arbiter picks the most common answer, and the simulated council
reviewers rank right answers first (see tests/test_eval.py): the table shows
the pipeline at work, not the quality of real models.
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-eval-")
os.environ.pop("OPENAI_API_KEY", None)

import test_eval as simulated  # noqa: E402  (the member and judge simulators)
from click.testing import CliRunner  # noqa: E402
from llm.cli import cli  # noqa: E402
from llm_consortium.simulator import SimProvider  # noqa: E402

ACCURACY = {"sim-90": 0.9, "sim-75": 0.75, "sim-70": 0.7, "sim-60": 0.6, "sim-50": 0.5}


def main():
    simulated.ACCURACY.clear()
    simulated.ACCURACY.update(ACCURACY)
    sim = SimProvider()
    try:
        for name in ACCURACY:
            sim.add(name, reply=simulated.member)
        sim.add("sim-judge", reply=simulated.judge)
        args = ["consortium", "eval", str(ROOT / "llm_consortium/data/sample-eval.jsonl"),
                *[a for m in ACCURACY for a in ("-m", m)], "--arbiter", "sim-judge"]
        for attempt in (1, 2):
            before = len(sim.requests)
            result = CliRunner().invoke(cli, args)
            print(f"run {attempt}: {len(sim.requests) - before} requests to the provider")
            print(result.stdout)
    finally:
        sim.close()


if __name__ == "__main__":
    main()
