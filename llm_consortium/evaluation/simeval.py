"""Simulated members of known accuracy, and a judge, for ``llm consortium
eval`` on a ``SimProvider``: used by tests/test_eval.py and by
benchmarks/eval_demo.py.

A member is right on an item with its accuracy p: each answer is a fixed
draw, from a hash of the model, what it was asked and the how-many-th time
it was asked that (its sample), so samples of one model differ and a rerun
of the same calls gives the same answers. A wrong answer is the next
letter, or the number plus one. As a council reviewer a member ranks the
right answers first. The judge picks the most common answer (the first on
a tie); as the council's chair, the answer the reviewers ranked first.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from decimal import Decimal

from llm_consortium.evaluation.simulator import arbiter_xml

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>")
REFINE_MARK = "\n\n---\nA panel of models answered this before"


def wrong(answer: str) -> str:
    """A wrong answer of the same kind: the next letter, or the number plus one."""
    if answer in "ABCD":
        return "ABCD"["ABCD".index(answer) - 3]
    return str(Decimal(answer) + 1)


def draw(*parts) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    return int(hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 16**8


def fenced_answers(prompt: str) -> dict[str, str]:
    """Label -> the <answer> of each fenced response in a judging prompt (not the vote's tally)."""
    fence = re.search(r"<<<(FENCE-[0-9a-f]{16}) BEGIN label>>>", prompt).group(1)
    blocks = re.findall(rf"<<<{fence} BEGIN (.+?)>>>\n(.*?)\n<<<{fence} END \1>>>", prompt, re.S)
    return {label: ANSWER_TAG.findall(text)[-1] for label, text in blocks if ANSWER_TAG.search(text)}


def original_prompt(prompt: str) -> str:
    return re.search(r"<original_prompt>\n(.*?)\n</original_prompt>", prompt, re.S).group(1)


class SimulatedPanel:
    """``truth``: prompt -> right answer; ``accuracy``: member name -> p.
    ``confidence(share)`` is what the judge reports, given the share of the
    answers behind the one it picked (0.9 whatever it is, by default)."""

    def __init__(self, truth: dict[str, str], accuracy: dict[str, float], confidence=lambda share: 0.9):
        self.truth = truth
        self.accuracy = accuracy
        self.confidence = confidence
        self.asked: Counter = Counter()
        self.lock = threading.Lock()

    def add_to(self, sim, judge: str = "sim-judge", **kwargs) -> None:
        """Register the members and the judge on ``sim`` (a SimProvider);
        ``kwargs`` go to each ``sim.add`` (a latency, a model_name ...)."""
        for name in self.accuracy:
            sim.add(name, reply=self.member, **kwargs)
        sim.add(judge, reply=self.judge, **kwargs)

    def is_right(self, model: str, asked: str, sample: int = 1) -> bool:
        return draw(model, asked, sample) < self.accuracy[model]

    def answer(self, model: str, asked: str, sample: int = 1) -> str:
        """The short answer ``model`` gives to ``asked`` (a prompt, or a
        later round's prompt built on it) the ``sample``-th time."""
        truth = self.truth[asked.split(REFINE_MARK)[0]]
        return truth if self.is_right(model, asked, sample) else wrong(truth)

    def member(self, request) -> str:
        if "FINAL RANKING:" in request.user:
            truth = self.truth[original_prompt(request.user)]
            shown = fenced_answers(request.user)
            ranked = sorted(shown, key=lambda label: shown[label] != truth)
            return "Reviews.\nFINAL RANKING:\n" + "\n".join(f"{i}. {label}" for i, label in enumerate(ranked, 1))
        with self.lock:
            self.asked[(request.model, request.system, request.user)] += 1
            sample = self.asked[(request.model, request.system, request.user)]
        return f"Working it out step by step.\n<answer>{self.answer(request.model, request.user, sample)}</answer>"

    def judge(self, request) -> str:
        answers = fenced_answers(request.user)
        counts = Counter(answers.values())
        if "# Peer review" in request.user:
            top = re.search(r"^1\. (Response [A-Z]+):", request.user, re.M).group(1)
            chosen = answers[top]
        else:
            chosen = counts.most_common(1)[0][0]
        return arbiter_xml(f"<answer>{chosen}</answer>", self.confidence(counts[chosen] / len(answers)))
