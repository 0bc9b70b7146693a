"""Runs in logs.db: ``RunRecorder`` writes each run as it happens, and the
query functions read them back.

Kept apart from ``store`` because it imports the engine, which costs more
than ``register_models`` (run on every ``llm`` command) should pay.
"""

from __future__ import annotations

import json
import sqlite3
import sys

from . import store
from .engine import Observer, Round, Run
from .members import CallOutcome
from .results import MemberResult, Usage

_CALL_COLUMNS = (
    "run_id, round, role, model, instance, prompt, text, error, "
    "input_tokens, output_tokens, seconds, attempts, cancelled, created"
)
_INSERT_CALL = f"INSERT INTO consortium_calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 14)})"


class RunRecorder(Observer):
    """Records runs in logs.db as they happen.

    ``run_started`` writes the run as 'running'; every call (member, arbiter,
    reviewer) and every round's judgement, with its measured agreement and
    details, is written as it arrives; the end sets the status ('success',
    'failed' or 'cancelled'), the totals and the full result JSON. So a run
    that is interrupted keeps what had arrived.

    After ``llm logs off`` nothing is recorded (checked when a run starts).
    A database error never stops the run: it is reported once on stderr and
    that run's recording stops. ``name`` is the saved configuration's name,
    if the run used one.
    """

    def __init__(self, name: str | None = None):
        self.name = name
        # One connection per run being recorded, by run id; opened by
        # run_started, closed at the run's end or at a database error.
        self._connections: dict[str, sqlite3.Connection] = {}

    def run_started(self, run: Run) -> None:
        if not store.logging_enabled():
            return
        try:
            self._connections[run.run_id] = store.connect(check_same_thread=False)
        except sqlite3.Error as exc:
            _warn(exc)
            return
        self._write(run, [(
            "INSERT INTO consortium_runs (id, name, prompt, system, config, method, status, "
            "iterations, input_tokens, output_tokens, started) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', 0, 0, 0, ?)",
            (run.run_id, self.name, run.prompt, run.system, json.dumps(run.config.to_dict()),
             run.config.method, run.started.isoformat()),
        )])

    def member_finished(self, run: Run, round_number: int, member: MemberResult, prompt: str) -> None:
        self._write(run, [_call(
            run, round_number, "member", member.model, member.instance, prompt, member.text,
            member.error, member.usage, member.seconds, member.attempts, member.cancelled,
        )])

    def arbiter_finished(self, run: Run, round_number: int, outcome: CallOutcome, prompt: str) -> None:
        self.call_finished(run, round_number, "arbiter", run.config.arbiter, 1, outcome, prompt)

    def call_finished(self, run: Run, round_number: int, role: str, model: str, instance: int,
                      outcome: CallOutcome, prompt: str) -> None:
        """A call a judging method made (the arbiter, a council reviewer), under its role."""
        self._write(run, [_call(
            run, round_number, role, model, instance, prompt, outcome.text,
            outcome.error, outcome.usage, round(outcome.seconds, 3), outcome.attempts, False,
        )])

    def round_finished(self, run: Run, round_: Round) -> None:
        judgement = round_.judgement
        if judgement is None:
            return
        self._write(run, [
            (
                "INSERT OR REPLACE INTO consortium_rounds (run_id, round, synthesis, confidence, analysis, "
                "dissent, needs_iteration, refinement_areas, raw, parse_ok, agreement, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, round_.number, judgement.synthesis, judgement.confidence, judgement.analysis,
                 judgement.dissent, int(judgement.needs_iteration), json.dumps(judgement.refinement_areas),
                 round_.arbiter_raw, int(judgement.parse_ok), judgement.agreement,
                 json.dumps(judgement.details, default=str)),
            ),
            _progress(run),
        ])

    def run_finished(self, run: Run, result: dict) -> None:
        self._finish(run, "success", None, result)

    def run_failed(self, run: Run, status: str, error: str) -> None:
        self._finish(run, status, error, run.to_dict())

    def _finish(self, run: Run, status: str, error: str | None, result: dict) -> None:
        finished = run.finished.isoformat() if run.finished else store.now()
        self._write(run, [
            _progress(run),
            (
                "UPDATE consortium_runs SET status = ?, error = ?, finished = ?, result = ? WHERE id = ?",
                (status, error, finished, json.dumps(result, default=str), run.run_id),
            ),
        ])
        conn = self._connections.pop(run.run_id, None)
        if conn is not None:
            conn.close()

    def _write(self, run: Run, statements: list[tuple[str, tuple]]) -> None:
        """Run (sql, params) statements in one transaction, if this run is being recorded."""
        conn = self._connections.get(run.run_id)
        if conn is None:
            return
        try:
            with conn:
                for sql, params in statements:
                    conn.execute(sql, params)
        except sqlite3.Error as exc:
            del self._connections[run.run_id]
            conn.close()
            _warn(exc)


def _call(run: Run, round_number: int, role: str, model: str, instance: int, prompt: str,
          text: str | None, error: str | None, usage: Usage, seconds: float, attempts: int,
          cancelled: bool) -> tuple[str, tuple]:
    """The statement recording one call, under its role."""
    return _INSERT_CALL, (
        run.run_id, round_number, role, model, instance, prompt, text, error,
        usage.input, usage.output, seconds, attempts, int(cancelled), store.now(),
    )


def _progress(run: Run) -> tuple[str, tuple]:
    """The statement bringing the run's row up to date with its latest round and totals."""
    last = run.rounds[-1].judgement if run.rounds and run.rounds[-1].judgement else None
    return (
        "UPDATE consortium_runs SET iterations = ?, synthesis = ?, confidence = ?, agreement = ?, "
        "input_tokens = ?, output_tokens = ? WHERE id = ?",
        (len(run.rounds), last.synthesis if last else None, last.confidence if last else None,
         last.agreement if last else None, run.usage.input, run.usage.output, run.run_id),
    )


def _warn(exc: sqlite3.Error) -> None:
    print(f"llm-consortium: could not record the run in logs.db ({exc}); recording stopped", file=sys.stderr)


# Reading runs back.


def list_runs(limit: int = 20) -> list[dict]:
    """The latest runs, newest first, summarised."""
    conn = store.connect()
    try:
        rows = conn.execute(
            "SELECT id, name, config, status, confidence, iterations, input_tokens, output_tokens, "
            "started, finished FROM consortium_runs ORDER BY started DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
    finally:
        conn.close()
    runs = []
    for id_, name, config, status, confidence, iterations, input_tokens, output_tokens, started, finished in rows:
        runs.append({
            "id": id_, "name": name, "models": _json(config, {}).get("models", []), "status": status,
            "confidence": confidence, "iterations": iterations, "input_tokens": input_tokens,
            "output_tokens": output_tokens, "started": started, "finished": finished,
        })
    return runs


def latest_run_id() -> str | None:
    """The id of the newest run, or None when there is none."""
    conn = store.connect()
    try:
        row = conn.execute("SELECT id FROM consortium_runs ORDER BY started DESC, rowid DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return row[0] if row else None


class AmbiguousRunId(LookupError):
    """A run id prefix that matches more than one run."""


def get_run(run_id_or_prefix: str) -> dict | None:
    """One run with its rounds and their calls, by id or a unique id prefix.

    Returns None when nothing matches; raises ``AmbiguousRunId`` when the
    prefix matches several runs. ``config`` and ``result`` come back parsed.
    Each round is {round, synthesis, confidence, analysis, dissent,
    needs_iteration, refinement_areas, parse_ok, agreement, details, calls};
    a round whose judgement never arrived (every member failed, or the run
    was cancelled) has None there and still lists its calls.
    """
    if not run_id_or_prefix:
        return None
    conn = store.connect()
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM consortium_runs WHERE substr(id, 1, ?) = ? LIMIT 2",
            (len(run_id_or_prefix), run_id_or_prefix),
        ).fetchall()
        if len(rows) > 1:
            raise AmbiguousRunId(f"Run id prefix {run_id_or_prefix!r} matches more than one run")
        if not rows:
            return None
        run = dict(rows[0])
        judgements = conn.execute(
            "SELECT * FROM consortium_rounds WHERE run_id = ? ORDER BY round", (run["id"],)
        ).fetchall()
        calls = conn.execute(
            "SELECT * FROM consortium_calls WHERE run_id = ? ORDER BY id", (run["id"],)
        ).fetchall()
    finally:
        conn.close()
    run["config"] = _json(run["config"], {})
    run["result"] = _json(run["result"], None)
    rounds: dict[int, dict] = {}
    for row in judgements:
        rounds[row["round"]] = {
            "round": row["round"], "synthesis": row["synthesis"], "confidence": row["confidence"],
            "analysis": row["analysis"], "dissent": row["dissent"],
            "needs_iteration": bool(row["needs_iteration"]),
            "refinement_areas": _json(row["refinement_areas"], []), "parse_ok": bool(row["parse_ok"]),
            "agreement": row["agreement"], "details": _json(row["details"], {}), "calls": [],
        }
    for row in calls:
        call = dict(row)
        del call["run_id"]
        call["cancelled"] = bool(call["cancelled"])
        rounds.setdefault(call["round"], _empty_round(call["round"]))["calls"].append(call)
    run["rounds"] = [rounds[number] for number in sorted(rounds)]
    return run


def _empty_round(number: int) -> dict:
    return {
        "round": number, "synthesis": None, "confidence": None, "analysis": None, "dissent": None,
        "needs_iteration": None, "refinement_areas": [], "parse_ok": None, "agreement": None, "details": {},
        "calls": [],
    }


def _json(text: str | None, default):
    """Parsed JSON, or ``default`` when it is missing or broken."""
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
