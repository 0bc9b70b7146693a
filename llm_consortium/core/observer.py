"""What a run tells those who listen: the engine calls each ``Observer``
method as the run goes (the display, the run recorder, the web viewer).

Apart from the engine so that listeners (the recorder) need not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Round, Run
    from .calls import CallOutcome
    from .results import MemberResult


class Observer:
    """Hears what a run does, as it happens. Override what you need.

    Threads: every event arrives on the thread that runs the run's event
    loop, one at a time: the caller's own loop for ``orchestrate`` and
    ``execute``, and for sync callers (``orchestrate_sync``, the CLI,
    ``llm -m NAME``) the one ``consortium-loop`` daemon thread (runner.py).
    A sync model is read in a thread of its own, but its chunks and tool
    calls are handed to the loop before they are told. So events need no
    lock among themselves; only state that another thread also touches
    needs one (the display's ``close`` comes from the thread that prints the
    answer). An event must return quickly: the run waits for it.

    Judging calls (``call_started``, ``call_finished``) carry their
    ``role``: "arbiter" (also as the council's chairman) or "reviewer" (a
    council member ranking the others' answers). ``call_started`` is told at
    each attempt.

    ``answer_chunk`` carries the answer as the judge writes it, when the run
    streams its answer (``Run.stream``) and this is its last round: raw text,
    never a tag of the judge's format, that faces make safe before showing.
    It is what the answer is expected to begin with, not yet the answer: if
    the run ends with another, ``Run.stream_withdrawn`` says so (and why) and
    the faces show the answer after a note and a separator.
    """

    def run_started(self, run: "Run") -> None: ...
    def round_started(self, run: "Run", round_number: int) -> None: ...
    def member_chunk(self, run: "Run", round_number: int, model: str, instance: int, chunk: str) -> None: ...
    def member_retry(self, run: "Run", round_number: int, model: str, instance: int, error: str, delay: float) -> None: ...
    def member_finished(self, run: "Run", round_number: int, member: MemberResult, prompt: str) -> None: ...
    def tool_called(self, run: "Run", round_number: int, model: str, instance: int, call: dict) -> None: ...
    def call_started(self, run: "Run", round_number: int, role: str, model: str, instance: int) -> None: ...
    def arbiter_chunk(self, run: "Run", round_number: int, chunk: str) -> None: ...
    def answer_chunk(self, run: "Run", round_number: int, text: str) -> None: ...
    def call_finished(self, run: "Run", round_number: int, role: str, model: str, instance: int, outcome: CallOutcome, prompt: str) -> None: ...
    def round_finished(self, run: "Run", round_: "Round") -> None: ...
    def run_finished(self, run: "Run", result: dict) -> None: ...
    def run_failed(self, run: "Run", status: str, error: str) -> None: ...
