"""Runs in logs.db: ``RunRecorder`` writes each run as it happens; the
queries that read them back are in ``store``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from . import store
from ..core.observer import Observer

if TYPE_CHECKING:
    from ..core.engine import Round, Run
    from ..core.calls import CallOutcome
    from ..core.results import MemberResult, Usage

_CALL_COLUMNS = (
    "run_id, round, role, model, instance, prompt, text, error, "
    "input_tokens, output_tokens, cost_usd, seconds, attempts, cancelled, created"
)
_INSERT_CALL = f"INSERT INTO consortium_calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 15)})"


class RunRecorder(Observer):
    """Records runs in logs.db as they happen.

    ``run_started`` writes the run as 'running', with the recording
    process's pid and host; every call (member, arbiter, reviewer) and every
    round's judgement, with its measured agreement and details, is written
    as it arrives, and so is every tool a member called (``-T``); the end
    sets the status (``outcome``'s vocabulary), its notes, the totals and
    the full result JSON. So a run that is interrupted keeps what had
    arrived, and one whose process died reads as 'interrupted' (see
    ``store.list_runs``).

    The writes happen in a thread per run (``RunWriter``), never on the
    event loop. At the run's end the recorder waits, at most
    ``store.busy_timeout()``, for them to be written; if some could
    not be, it says so in one line on stderr. ``recorded(run_id)`` then
    tells whether the whole record is in logs.db.

    After ``llm logs off`` nothing is recorded (checked when a run starts).
    ``name`` is the saved configuration's name, if the run used one.
    """

    def __init__(self, name: str | None = None):
        self.name = name
        self._writers: dict[str, RunWriter] = {}  # runs being recorded, by id
        self._recorded: dict[str, bool] = {}  # runs that ended, by id: whole record written?

    def recorded(self, run_id: str) -> bool:
        """Whether the run has ended and its whole record is in logs.db."""
        return self._recorded.get(run_id, False)

    def run_started(self, run: Run) -> None:
        if not store.logging_enabled():
            return
        self._writers[run.run_id] = RunWriter(store.db_path(), run.run_id)
        self._write(run, [(
            "INSERT INTO consortium_runs (id, name, prompt, system, config, method, status, "
            "iterations, input_tokens, output_tokens, started, pid, host, parent_run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', 0, 0, 0, ?, ?, ?, ?)",
            (run.run_id, self.name, run.prompt, run.system, json.dumps(run.config.to_dict()),
             run.config.method, run.started.isoformat(), os.getpid(), socket.gethostname(), run.parent_run_id),
        )])

    def member_finished(self, run: Run, round_number: int, member: MemberResult, prompt: str) -> None:
        self._write(run, [_call(
            run, round_number, "member", member.model, member.instance, prompt, member.text,
            member.error, member.usage, member.seconds, member.attempts, member.cancelled,
        )])

    def tool_called(self, run: Run, round_number: int, model: str, instance: int, call: dict) -> None:
        self._write(run, [(
            "INSERT INTO consortium_tool_calls (run_id, round, model, instance, name, arguments, output, "
            "error, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, round_number, model, instance, call["name"],
             json.dumps(call["arguments"], default=str), call["output"], call["error"], store.now()),
        )])

    def call_finished(self, run: Run, round_number: int, role: str, model: str, instance: int,
                      outcome: CallOutcome, prompt: str) -> None:
        """A call a judging method made (the arbiter, a council reviewer), under its role."""
        self._write(run, [_call(
            run, round_number, role, model, instance, prompt, outcome.text,
            outcome.error, outcome.usage, round(outcome.seconds, 3), outcome.attempts, outcome.cancelled,
        )])

    def round_finished(self, run: Run, round_: Round) -> None:
        judgement = round_.judgement
        if judgement is None:
            return
        self._write(run, [
            (
                "INSERT OR REPLACE INTO consortium_rounds (run_id, round, synthesis, confidence, analysis, "
                "dissent, refinement_areas, raw, parse_ok, agreement, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, round_.number, judgement.synthesis, judgement.confidence, judgement.analysis,
                 judgement.dissent, json.dumps(judgement.refinement_areas),
                 round_.arbiter_raw, int(judgement.parse_ok), judgement.agreement,
                 json.dumps(judgement.details.to_dict(), default=str)),
            ),
            _progress(run),
        ])

    def run_finished(self, run: Run, result: dict) -> None:
        self._finish(run, None, result)

    def run_failed(self, run: Run, status: str, error: str) -> None:
        self._finish(run, error, run.to_dict())

    def _finish(self, run: Run, error: str | None, result: dict) -> None:
        """The run's status (``outcome``), its notes and counts, and the result."""
        finished = run.finished.isoformat() if run.finished else store.now()
        meta = result["metadata"]
        self._write(run, [
            _progress(run),
            (
                "UPDATE consortium_runs SET status = ?, error = ?, finished = ?, result = ?, notes = ?, "
                "members = ?, answered = ?, agreeing = ?, not_asked = ?, decisive = ? WHERE id = ?",
                (meta["status"], error, finished, json.dumps(result, default=str), json.dumps(meta["notes"]),
                 meta["members"], meta["answered"], meta["agreeing"], meta["not_asked"], meta["decisive"],
                 run.run_id),
            ),
        ])
        writer = self._writers.pop(run.run_id, None)
        if writer is None:
            return
        unwritten = writer.close(store.busy_timeout())
        self._recorded[run.run_id] = not unwritten
        if unwritten:
            reason = writer.error or "still waiting for the database"
            print(f"llm-consortium: run {run.run_id[:8]} is not fully recorded in logs.db ({reason}): "
                  f"{unwritten} of its records could not be written", file=sys.stderr)

    def _write(self, run: Run, statements: list[tuple[str, tuple]]) -> None:
        """Queue (sql, params) statements, one transaction, if this run is being recorded."""
        writer = self._writers.get(run.run_id)
        if writer is not None:
            writer.put(statements)


class RunWriter:
    """Writes one run's records to logs.db, in order, in a thread of its own.

    Each ``put`` is one transaction. One that fails because the database is
    locked beyond the busy timeout, full, or failing to read or write is
    kept and tried again until it succeeds, and the ones after it wait
    their turn; one that fails for a reason retrying cannot fix (a table
    someone dropped) is given up. The thread ends once ``close`` has been
    called and nothing is left to write.

    logs.db may be removed or replaced while a run goes on (a user cleaning
    up, a backup restored). The open connection would then go on writing
    into a file no one can see, and SQLite refuses that ("attempt to write a
    readonly database"). So before each transaction the writer compares the
    file at the path with the one it has open (device and inode); when they
    differ it opens the one there (creating it, with the plugin's tables),
    and writes the whole run again: every record written so far, after
    removing any copy of the run the new file already holds.
    """

    RETRY_SECONDS = 0.2
    TRANSIENT = ("locked", "busy", "full", "disk i/o error", "unable to open")

    def __init__(self, path: Path, run_id: str):
        self.path = path
        self.run_id = run_id
        self.error: sqlite3.Error | None = None  # the latest one
        self._pending: deque[list[tuple[str, tuple]]] = deque()
        self._written: list[list[tuple[str, tuple]]] = []  # every transaction committed so far
        self._given_up = 0
        self._closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._work, name="consortium-recorder", daemon=True).start()

    def put(self, statements: list[tuple[str, tuple]]) -> None:
        with self._changed:
            self._pending.append(statements)
            self._changed.notify_all()

    def close(self, timeout: float) -> int:
        """No more to come: wait up to ``timeout`` seconds for the rest to be
        written. Returns how many were not (0: the whole record is written);
        those still pending are still tried while the process lives."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: not self._pending, timeout)
            return self._given_up + len(self._pending)

    def _work(self) -> None:
        conn, opened = None, None  # the connection, and the (device, inode) of the file it has open
        holder = None  # the (device, inode) of the file holding the record so far
        lost = False  # that file is gone from the path
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    break
                statements = self._pending[0]
            try:
                # Compared while the connection is open: the file it holds
                # keeps its inode, so no new file can be given the same one.
                if conn and _identity(self.path) != opened:  # removed or replaced since it was opened
                    conn.close()
                    conn, lost = None, True
                if conn is None:
                    conn = store.connect(self.path)
                    opened = _identity(self.path)
                rewrite = bool(self._written) and (lost or opened != holder)
                with conn:
                    for sql, params in (self._rewrite() if rewrite else []) + statements:
                        conn.execute(sql, params)
                holder, lost = opened, False
                self._written.append(statements)
            except sqlite3.Error as exc:
                self.error = exc
                moved = conn is not None and _identity(self.path) != opened  # during this transaction
                if conn:
                    conn.close()
                    conn = None
                lost = lost or moved
                if moved or isinstance(exc, sqlite3.OperationalError) and any(
                    word in str(exc).lower() for word in self.TRANSIENT
                ):
                    time.sleep(self.RETRY_SECONDS)
                    continue
                with self._changed:
                    self._given_up += 1
            with self._changed:
                self._pending.popleft()
                self._changed.notify_all()
        if conn:
            conn.close()

    def _rewrite(self) -> list[tuple[str, tuple]]:
        """The statements writing the run again into another file: any copy
        of it there removed, then every record written so far, in order."""
        removals = [(f"DELETE FROM {table} WHERE {column} = ?", (self.run_id,)) for table, column in (
            ("consortium_runs", "id"), ("consortium_calls", "run_id"), ("consortium_rounds", "run_id"),
            ("consortium_tool_calls", "run_id"))]
        return removals + [statement for batch in self._written for statement in batch]


def _identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file at ``path``; None when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _call(run: Run, round_number: int, role: str, model: str, instance: int, prompt: str,
          text: str | None, error: str | None, usage: Usage, seconds: float, attempts: int,
          cancelled: bool) -> tuple[str, tuple]:
    """The statement recording one call, under its role; a call whose model
    reported no usage has its tokens NULL (unknown, not 0)."""
    counted = (None, None) if usage.unreported else (usage.input, usage.output)
    return _INSERT_CALL, (
        run.run_id, round_number, role, model, instance, prompt, text, error,
        *counted, usage.cost_usd, seconds, attempts, int(cancelled), store.now(),
    )


def _progress(run: Run) -> tuple[str, tuple]:
    """The statement bringing the run's row up to date with its latest round and totals."""
    last = run.last_judgement
    return (
        "UPDATE consortium_runs SET iterations = ?, synthesis = ?, confidence = ?, agreement = ?, "
        "input_tokens = ?, output_tokens = ?, unreported_calls = ?, cost_usd = ?, priced_usd = ?, "
        "unpriced_calls = ?, stopped_because = ? WHERE id = ?",
        (len(run.rounds), last.synthesis if last else None, last.confidence if last else None,
         last.agreement if last else None, run.usage.input, run.usage.output, run.usage.unreported,
         run.usage.cost_usd, run.usage.cost, run.usage.unpriced, run.stopped_because, run.run_id),
    )
