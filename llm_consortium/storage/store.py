"""The plugin's tables in llm's own log database: saved configurations,
the schema and its migrations, the connection every writer uses, and the
queries that read recorded runs back.

llm imports the plugin, and calls ``register_models`` (which reads saved
configurations), on every command, so this module imports only the standard
library at the top and ``llm`` inside functions. Recording runs as they
happen lives in ``recorder``.

Every table is prefixed ``consortium_`` and none has a foreign key into
llm's tables. Writes take the write lock up front (``BEGIN IMMEDIATE``) and
wait up to ten seconds for it, so several processes can record at once.
Schema changes, the plugin's and llm's own migrations, are serialised
across processes by ``schema_lock``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from ..core.outcome import UNANSWERED, WITHDRAWN
from ..core.stopping import record_note


def busy_timeout() -> float:
    """How long a write waits for another connection's lock, and the end of
    a run for its record to be written: 10 s, or the seconds in
    LLM_CONSORTIUM_BUSY_TIMEOUT (read when used; tests shorten it)."""
    try:
        return float(os.environ.get("LLM_CONSORTIUM_BUSY_TIMEOUT", 10))
    except ValueError:
        return 10.0


# Named migrations, applied once each, in this order. Add new ones at the end;
# never edit one that has shipped. ``consortium_configs`` is exactly the table
# llm-consortium 0.3 created, so existing users' saved configurations keep
# working; settings it lacks are stored as extra keys of its JSON.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "001_configs",
        [
            "CREATE TABLE IF NOT EXISTS consortium_configs "
            "(name TEXT PRIMARY KEY, config TEXT, created_at TEXT)",
        ],
    ),
    (
        "002_runs",
        [
            """CREATE TABLE IF NOT EXISTS consortium_runs (
                id TEXT PRIMARY KEY, name TEXT, prompt TEXT, system TEXT, config TEXT,
                method TEXT, status TEXT, synthesis TEXT, confidence REAL, iterations INTEGER,
                input_tokens INTEGER, output_tokens INTEGER, started TEXT, finished TEXT,
                error TEXT, result TEXT)""",
            """CREATE TABLE IF NOT EXISTS consortium_calls (
                id INTEGER PRIMARY KEY, run_id TEXT, round INTEGER, role TEXT, model TEXT,
                instance INTEGER, prompt TEXT, text TEXT, error TEXT, input_tokens INTEGER,
                output_tokens INTEGER, seconds REAL, attempts INTEGER, cancelled INTEGER,
                created TEXT)""",
            "CREATE INDEX IF NOT EXISTS consortium_calls_run_id ON consortium_calls (run_id)",
            """CREATE TABLE IF NOT EXISTS consortium_rounds (
                run_id TEXT, round INTEGER, synthesis TEXT, confidence REAL, analysis TEXT,
                dissent TEXT, needs_iteration INTEGER, refinement_areas TEXT, raw TEXT,
                parse_ok INTEGER, PRIMARY KEY (run_id, round))""",
        ],
    ),
    (
        # Agreement measured by the judging methods, and what they computed
        # on the way (a tally, a ranking).
        "003_agreement",
        [
            "ALTER TABLE consortium_rounds ADD COLUMN agreement REAL",
            "ALTER TABLE consortium_rounds ADD COLUMN details TEXT",
            "ALTER TABLE consortium_runs ADD COLUMN agreement REAL",
        ],
    ),
    (
        # The process recording a run, so that a run left 'running' by a
        # process that has gone reads as interrupted.
        "004_process",
        [
            "ALTER TABLE consortium_runs ADD COLUMN pid INTEGER",
            "ALTER TABLE consortium_runs ADD COLUMN host TEXT",
        ],
    ),
    (
        # Unsaved runs were each saved as a model named consortium-<hash>
        # (dozens after an afternoon); now one, consortium-last, is kept.
        "005_one_unsaved_model",
        [
            "DELETE FROM consortium_configs WHERE json_extract(config, '$.ad_hoc') "
            "AND name != 'consortium-last'",
        ],
    ),
    (
        # Every tool a member called (llm -T): its arguments (JSON), and
        # its output or error.
        "006_tool_calls",
        [
            """CREATE TABLE IF NOT EXISTS consortium_tool_calls (
                id INTEGER PRIMARY KEY, run_id TEXT, round INTEGER, model TEXT, instance INTEGER,
                name TEXT, arguments TEXT, output TEXT, error TEXT, created TEXT)""",
            "CREATE INDEX IF NOT EXISTS consortium_tool_calls_run_id ON consortium_tool_calls (run_id)",
        ],
    ),
    (
        # Dollars (see ``pricing``), NULL where unknown: each call's, and
        # the run's, with the known part and how many calls are unpriced,
        # and why a run stopped early (--max-cost).
        "008_cost",
        [
            "ALTER TABLE consortium_calls ADD COLUMN cost_usd REAL",
            "ALTER TABLE consortium_runs ADD COLUMN cost_usd REAL",
            "ALTER TABLE consortium_runs ADD COLUMN priced_usd REAL",
            "ALTER TABLE consortium_runs ADD COLUMN unpriced_calls INTEGER",
            "ALTER TABLE consortium_runs ADD COLUMN stopped_because TEXT",
        ],
    ),
    (
        # A run made by ``rejudge``: the run whose member answers it judged again.
        "009_rejudge",
        ["ALTER TABLE consortium_runs ADD COLUMN parent_run_id TEXT"],
    ),
    (
        # The outcome (``core.outcome``): every condition behind the status,
        # and "k of n agree, m of n answered".
        "010_outcome",
        [
            "ALTER TABLE consortium_runs ADD COLUMN notes TEXT",
            "ALTER TABLE consortium_runs ADD COLUMN members INTEGER",
            "ALTER TABLE consortium_runs ADD COLUMN answered INTEGER",
            "ALTER TABLE consortium_runs ADD COLUMN agreeing INTEGER",
        ],
    ),
    (
        # The runs lists page through the runs newest first and offer the
        # names, methods and statuses recorded; a run's page lists its rejudgings.
        "011_runs_indexes",
        [
            "CREATE INDEX IF NOT EXISTS consortium_runs_started ON consortium_runs (started)",
            "CREATE INDEX IF NOT EXISTS consortium_runs_name ON consortium_runs (name)",
            "CREATE INDEX IF NOT EXISTS consortium_runs_method ON consortium_runs (method)",
            "CREATE INDEX IF NOT EXISTS consortium_runs_status ON consortium_runs (status)",
            "CREATE INDEX IF NOT EXISTS consortium_runs_parent ON consortium_runs (parent_run_id)",
        ],
    ),
    (
        # Judge audits (``evaluation.audit``): a run's answers judged again in
        # other orders, one row an audit, its shuffles in ``audit`` (JSON).
        "012_audits",
        [
            """CREATE TABLE IF NOT EXISTS consortium_audits (
                id INTEGER PRIMARY KEY, run_id TEXT, created TEXT, method TEXT, arbiter TEXT,
                shuffles INTEGER, flip_rate REAL, audit TEXT)""",
            "CREATE INDEX IF NOT EXISTS consortium_audits_run_id ON consortium_audits (run_id)",
        ],
    ),
    (
        # --adaptive: members never asked, and whether the panel was decisive.
        "013_adaptive",
        [
            "ALTER TABLE consortium_runs ADD COLUMN not_asked INTEGER",
            "ALTER TABLE consortium_runs ADD COLUMN decisive INTEGER",
        ],
    ),
    (
        # A saved consortium's calibration (``eval --calibrate``), by its name.
        # A table of its own: not a key of the config JSON, so that it is read
        # only when a run starts (not by register_models on every llm command),
        # is not taken for a setting by list, show or save, and outlives a save
        # that leaves the members and arbiter as they were; and not a column of
        # consortium_configs, which keeps exactly the columns 0.3 created (0.3
        # inserts rows without naming them).
        "014_calibrations",
        ["CREATE TABLE IF NOT EXISTS consortium_calibrations (name TEXT PRIMARY KEY, calibration TEXT, "
         "created_at TEXT)"],
    ),
    (
        # How many of a run's calls reported no tokens: its token count is then
        # a lower bound (unknown, when no call reported any), never shown as 0.
        "015_unreported",
        ["ALTER TABLE consortium_runs ADD COLUMN unreported_calls INTEGER"],
    ),
]


def user_dir() -> Path:
    """llm's user directory (honours ``LLM_USER_PATH``), looked up on each call."""
    import llm

    return llm.user_dir()


def db_path() -> Path:
    """llm's log database, where the plugin's tables live."""
    return user_dir() / "logs.db"


@contextmanager
def schema_lock(path: Path):
    """Hold an exclusive lock on ``logs.db.consortium-lock`` beside the
    database at ``path`` while changing its schema.

    llm's ``migrate`` is a series of separate statements that check, then
    create: two processes running it at once on a new logs.db can leave it
    half-migrated, and llm then fails on every command. Every place the
    plugin migrates, llm's tables or its own, does so holding this lock, so
    no two plugin processes migrate at once. The lock is released when the
    process exits, however it exits. Where ``fcntl`` does not exist
    (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".consortium-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def logging_enabled() -> bool:
    """False after ``llm logs off`` (which creates ``logs-off`` in the user dir)."""
    return not (user_dir() / "logs-off").exists()


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat()


def connect(path: Path | None = None) -> sqlite3.Connection:
    """Open logs.db, or the database at ``path``, creating it if needed, with
    the plugin's schema in place.

    ``with conn:`` around a write begins it with ``BEGIN IMMEDIATE``: the
    write lock is taken at once, waiting for another writer if need be,
    rather than failed on half-way through.
    """
    path = path or db_path()
    conn = sqlite3.connect(path, timeout=busy_timeout(), isolation_level="IMMEDIATE")
    try:
        ensure_schema(conn, path)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


@contextmanager
def connection(path: Path | None = None):
    """``connect``, closed when the block ends, however it ends (a write
    not committed by then is rolled back)."""
    with closing(connect(path)) as conn:
        yield conn


def ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Apply every migration not applied yet, each recorded in ``consortium_migrations``.

    The usual case (all applied) is one read. Otherwise the pending ones run
    in one transaction holding the write lock, and are re-checked under it,
    so two processes starting at once apply each migration once; and under
    ``schema_lock``, so they never run while the plugin runs llm's migrations.
    """
    if not _pending_migrations(conn):
        return
    with schema_lock(path), conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS consortium_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
        )
        for name, statements in _pending_migrations(conn):
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO consortium_migrations (name, applied_at) VALUES (?, ?)", (name, now()))


def _pending_migrations(conn: sqlite3.Connection) -> list[tuple[str, list[str]]]:
    try:
        applied = {row[0] for row in conn.execute("SELECT name FROM consortium_migrations")}
    except sqlite3.OperationalError:  # no migrations table yet
        applied = set()
    return [(name, statements) for name, statements in MIGRATIONS if name not in applied]


# Saved configurations. They are not logs: ``llm logs off`` does not stop them.


def save_config(name: str, config: dict) -> str | None:
    """Save (or replace) a named configuration. Its calibration is kept
    while its members and arbiter stay the same, and dropped otherwise;
    returns why the calibration no longer applies (dropped, or no map for
    its method), or None when it applies or there is none."""
    from ..core.calibrated import fingerprint, for_run

    models, arbiter = config.get("models") or [], config.get("arbiter")
    with connection() as conn, conn:
        stored = _calibration(conn, name)
        drop = bool(stored) and stored.get("fingerprint") != fingerprint(models, arbiter)
        if drop:
            conn.execute("DELETE FROM consortium_calibrations WHERE name = ?", (name,))
        conn.execute(
            "INSERT OR REPLACE INTO consortium_configs (name, config, created_at) VALUES (?, ?, ?)",
            (name, json.dumps(config), now()),
        )
    if drop:
        return "its calibration was dropped: the members or the arbiter changed"
    return for_run(stored, models, arbiter, config.get("method", "arbiter"))[1] if stored else None


def load_config(name: str) -> dict | None:
    """The configuration saved as ``name``, or None."""
    with connection() as conn:
        row = conn.execute("SELECT config FROM consortium_configs WHERE name = ?", (name,)).fetchone()
    return json.loads(row[0]) if row else None


def save_calibration(name: str, calibration: dict) -> None:
    """Store ``calibration`` ({"fingerprint", "methods": {method: map}}) for the saved consortium ``name``."""
    with connection() as conn, conn:
        conn.execute("INSERT OR REPLACE INTO consortium_calibrations (name, calibration, created_at) VALUES (?, ?, ?)",
                     (name, json.dumps(calibration), now()))


def load_calibration(name: str) -> dict | None:
    """The calibration stored for the saved consortium ``name``, or None."""
    with connection() as conn:
        return _calibration(conn, name)


def _calibration(conn: sqlite3.Connection, name: str) -> dict | None:
    row = conn.execute("SELECT calibration FROM consortium_calibrations WHERE name = ?", (name,)).fetchone()
    return _json(row[0], None) if row else None


def list_configs() -> list[tuple[str, dict, str]]:
    """Every saved configuration as (name, config, created_at), by name."""
    with connection() as conn:
        rows = conn.execute("SELECT name, config, created_at FROM consortium_configs ORDER BY name").fetchall()
    return [(name, json.loads(config), created_at) for name, config, created_at in rows]


def remove_config(name: str) -> bool:
    """Delete a saved configuration; False if there was none by that name."""
    with connection() as conn, conn:
        cursor = conn.execute("DELETE FROM consortium_configs WHERE name = ?", (name,))
        conn.execute("DELETE FROM consortium_calibrations WHERE name = ?", (name,))
    return cursor.rowcount > 0


def saved_configs_fast() -> list[tuple[str, dict]]:
    """(name, config) for every saved configuration, for ``register_models``.

    Runs on every ``llm`` command, so: one query on a read-only connection,
    no schema work, and a missing database is not created. It never raises:
    a missing table or a broken database gives [], a row whose JSON is
    broken is skipped.

    A reader waits only while another connection holds the database's
    EXCLUSIVE lock: for a commit that is milliseconds, but a long
    transaction whose changes spill out of memory (a VACUUM, a big
    import) holds it throughout. After a second of that the table is read
    straight from the file (``immutable``: no locking), which holds the
    last committed configurations, rather than answer none.
    """
    path = db_path()
    if not path.exists():
        return []
    try:
        try:
            rows = _read_configs(f"{path.as_uri()}?mode=ro", timeout=1)
        except sqlite3.OperationalError:  # locked
            rows = _read_configs(f"{path.as_uri()}?mode=ro&immutable=1", timeout=0)
    except sqlite3.Error:
        return []
    configs = []
    for name, text in rows:
        try:
            config = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and isinstance(config, dict):
            configs.append((name, config))
    return configs


def _read_configs(uri: str, timeout: float) -> list[tuple]:
    with closing(sqlite3.connect(uri, uri=True, timeout=timeout)) as conn:
        return conn.execute("SELECT name, config FROM consortium_configs ORDER BY name").fetchall()


# Runs, as ``recorder.RunRecorder`` wrote them.


class RunRow(BaseModel):
    """One run as the runs lists show it (``list_runs``): its row's columns,
    the status as ``get_run`` reads it, and its members' models from its
    config. A run recorded before a column existed has None there."""

    id: str
    name: str | None = None
    prompt: str | None = None
    method: str | None = None
    models: list[str] = Field(default_factory=list)
    status: str
    notes: list[str] = Field(default_factory=list)
    members: int | None = None
    answered: int | None = None
    agreeing: int | None = None
    not_asked: int | None = None
    decisive: bool = False
    confidence: float | None = None
    agreement: float | None = None
    stop_on: str | None = "arbiter"
    threshold: float | None = None
    threshold_note: str | None = None
    iterations: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    unreported_calls: int | None = None  # calls that reported no tokens (None: recorded before this was)
    cost_usd: float | None = None
    priced_usd: float | None = None
    unpriced_calls: int | None = None
    stopped_because: str | None = None
    started: str | None = None
    finished: str | None = None

    @property
    def tokens(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)



def list_runs(limit: int | None = 20, *, offset: int = 0, prompt: str | None = None, name: str | None = None,
              method: str | None = None, status: str | None = None) -> list[RunRow]:
    """The latest runs, newest first, summarised; ``limit`` None (or beyond
    what SQLite counts to) for all, after skipping ``offset`` of them.

    Only those whose prompt contains ``prompt`` (ignoring ASCII case), made
    by the saved consortium ``name``, with ``method``, or with ``status``,
    when given.

    A run still marked 'running' whose recording process has gone (on this
    host, no process has its pid: killed with -9, or its machine lost
    power) is given as 'interrupted'; ``get_run`` does the same.
    """
    where, params, derived = _run_filter(prompt, name, method, status)
    sql_limit = -1 if derived or limit is None or limit > _MAX_SQLITE_INTEGER else limit
    with connection() as conn:
        rows = conn.execute(
            "SELECT id, name, prompt, method, config, status, confidence, agreement, iterations, input_tokens, "
            "output_tokens, cost_usd, priced_usd, unpriced_calls, stopped_because, started, finished, pid, host, "
            "notes, members, answered, agreeing, not_asked, decisive, unreported_calls "
            f"FROM consortium_runs {where} "
            "ORDER BY started DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, sql_limit, 0 if derived else offset),
        ).fetchall()
    runs = []
    for (id_, name_, prompt_, method_, config, status_, confidence, agreement, iterations, input_tokens,
         output_tokens, cost_usd, priced_usd, unpriced_calls, stopped_because, started, finished, pid, host,
         notes, members, answered, agreeing, not_asked, decisive, unreported_calls) in rows:
        config = _json(config, {})
        note = None if decisive else record_note(config, confidence, agreement, iterations, stopped_because, status_)
        runs.append(RunRow(
            id=id_, name=name_, prompt=prompt_, method=method_, models=config.get("models", []),
            status=_status(status_, pid, host, notes, note), notes=_json(notes, []), members=members,
            answered=answered, agreeing=agreeing, not_asked=not_asked, decisive=bool(decisive), confidence=confidence, agreement=agreement,
            stop_on=config.get("stop_on", "arbiter"), threshold=config.get("confidence_threshold"),
            threshold_note=note, iterations=iterations, input_tokens=input_tokens, output_tokens=output_tokens,
            unreported_calls=unreported_calls,
            cost_usd=cost_usd, priced_usd=priced_usd, unpriced_calls=unpriced_calls,
            stopped_because=stopped_because, started=started, finished=finished,
        ))
    if derived:
        runs = [run for run in runs if run.status == status][offset:]
        runs = runs if limit is None else runs[:limit]
    return runs


def count_runs(*, prompt: str | None = None, name: str | None = None, method: str | None = None,
               status: str | None = None) -> int:
    """How many runs ``list_runs`` would give with these filters and no limit."""
    where, params, derived = _run_filter(prompt, name, method, status)
    with connection() as conn:
        if not derived:
            return conn.execute(f"SELECT count(*) FROM consortium_runs {where}", params).fetchone()[0]
        rows = conn.execute(f"SELECT status, pid, host FROM consortium_runs {where}", params).fetchall()
    return sum(_status(*row) == status for row in rows)


def _run_filter(prompt: str | None, name: str | None, method: str | None,
                status: str | None) -> tuple[str, list, bool]:
    """The WHERE clause and its parameters for the runs lists' filters, and
    whether the status asked for is told apart only after reading the rows
    ('interrupted' is a 'running' row whose process has gone)."""
    where, params = [], []
    for column, value in (("name", name), ("method", method)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if prompt:
        where.append("instr(lower(prompt), lower(?)) > 0")
        params.append(prompt)
    derived = status in ("running", "interrupted")
    if status:
        where.append("status = ?")
        params.append("running" if derived else status)
    return ("WHERE " + " AND ".join(where) if where else ""), params, derived


def run_facets() -> dict[str, list[str]]:
    """The values the runs can be filtered by: {"name": saved consortia
    that made runs, "method": methods, "status": statuses recorded}."""
    with connection() as conn:
        return {
            column: [row[0] for row in conn.execute(
                f"SELECT DISTINCT {column} FROM consortium_runs WHERE {column} IS NOT NULL ORDER BY {column}"
            )]
            for column in ("name", "method", "status")
        }


_MAX_SQLITE_INTEGER = 2**63 - 1


def _status(status: str, pid: int | None, host: str | None, notes: str | None = None,
            threshold_note: str | None = None) -> str:
    """The recorded status, or 'interrupted' for a run left 'running' by a
    process of this host that no longer exists. A run recorded before the
    outcome vocabulary (no notes) as 'success' whose threshold was not
    reached reads as 'below_threshold', as it would be recorded now."""
    if status == "running" and pid and host == socket.gethostname() and not _process_exists(pid):
        return "interrupted"
    if status == "success" and notes is None and threshold_note:
        return "below_threshold"
    return status


def _process_exists(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell: os.kill(pid, 0) would end the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def withdrawn_stream_answer(answer: str) -> bool:
    """Whether a recorded run whose streamed answer was withdrawn has
    ``answer`` as its checked answer (``faces.model.checked_history``)."""
    with connection() as conn:
        return conn.execute("SELECT 1 FROM consortium_runs WHERE synthesis = ? AND instr(notes, ?) > 0 LIMIT 1",
                            (answer, WITHDRAWN)).fetchone() is not None


def wait_recorded(run_id: str, seconds: float = 5.0) -> bool:
    """Wait, at most ``seconds``, for a run that has started to have its row
    (the recorder writes in a thread of its own); whether it has. Blocks: an
    event loop calls it in a worker thread."""
    import time

    deadline = time.monotonic() + seconds
    while get_run(run_id) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def latest_run_id() -> str | None:
    """The id of the newest run, or None when there is none."""
    with connection() as conn:
        row = conn.execute("SELECT id FROM consortium_runs ORDER BY started DESC, rowid DESC LIMIT 1").fetchone()
    return row[0] if row else None


class RunNotFound(LookupError):
    """No recorded run matches an id or prefix (``find_run``), or several
    do (``AmbiguousRunId``); the message says which, in one line."""


class AmbiguousRunId(RunNotFound):
    """A run id prefix that matches more than one run."""


def find_run(run_id_or_prefix: str) -> dict:
    """``get_run``'s run, or ``RunNotFound`` saying why there is none."""
    row = get_run(run_id_or_prefix)
    if row is None:
        raise RunNotFound(f"No run matches {run_id_or_prefix!r} (see 'llm consortium runs')")
    return row


def get_run(run_id_or_prefix: str) -> dict | None:
    """One run with its rounds and their calls, by id or a unique id prefix.

    Returns None when nothing matches; raises ``AmbiguousRunId`` when the
    prefix matches several runs. ``config`` and ``result`` come back parsed;
    ``parent_run_id`` is the run a ``rejudge`` judged again, and
    ``rejudged_as`` the runs that judged this one's answers again, and
    ``audits`` its judge audits (``save_audit``), oldest first.
    ``threshold_note`` says when the stop rule's threshold was not reached
    (``stopping.record_note``). Each round is {round, synthesis, confidence,
    analysis, dissent, refinement_areas, parse_ok,
    agreement, details (the groups of equivalent answers in
    ``details["agreement"]``), calls (a member's with the tools it called
    that round, ``tool_calls``: {name, arguments, output, error}),
    cost_usd, priced_usd, unpriced_calls}: the round's dollars summed from
    its calls', ``cost_usd`` None when any call's is unknown;
    a round whose judgement never arrived (every member failed, or the run
    was cancelled) has None there and still lists its calls.
    """
    if not run_id_or_prefix:
        return None
    with connection() as conn:
        conn.row_factory = sqlite3.Row
        # A prefix as a range of the primary key: every id from the prefix up
        # to (not including) the prefix with its last character one higher.
        after = run_id_or_prefix[:-1] + chr(min(ord(run_id_or_prefix[-1]) + 1, 0x10FFFF))
        rows = conn.execute(
            "SELECT * FROM consortium_runs WHERE id >= ? AND id < ? LIMIT 2", (run_id_or_prefix, after),
        ).fetchall()
        if len(rows) > 1:
            raise AmbiguousRunId(f"{run_id_or_prefix!r} matches several runs: give more of the id")
        if not rows:
            return None
        run = dict(rows[0])
        judgements = conn.execute(
            "SELECT * FROM consortium_rounds WHERE run_id = ? ORDER BY round", (run["id"],)
        ).fetchall()
        calls = conn.execute(
            "SELECT * FROM consortium_calls WHERE run_id = ? ORDER BY id", (run["id"],)
        ).fetchall()
        tool_calls = conn.execute(
            "SELECT round, model, instance, name, arguments, output, error FROM consortium_tool_calls "
            "WHERE run_id = ? ORDER BY id", (run["id"],)
        ).fetchall()
        run["rejudged_as"] = [row[0] for row in conn.execute(
            "SELECT id FROM consortium_runs WHERE parent_run_id = ? ORDER BY started, rowid", (run["id"],)
        )]
        run["audits"] = [_json(row[0], None) for row in conn.execute(
            "SELECT audit FROM consortium_audits WHERE run_id = ? ORDER BY id", (run["id"],)
        )]
    run["config"] = _json(run["config"], {})
    run["threshold_note"] = None if run["decisive"] else record_note(
        run["config"], run["confidence"], run["agreement"], run["iterations"], run["stopped_because"], run["status"])
    run["status"] = _status(run["status"], run["pid"], run["host"], run["notes"], run["threshold_note"])
    run["notes"] = _json(run["notes"], [])
    run["result"] = _json(run["result"], None)
    rounds: dict[int, dict] = {}
    for row in judgements:
        rounds[row["round"]] = {
            "round": row["round"], "synthesis": row["synthesis"], "confidence": row["confidence"],
            "analysis": row["analysis"], "dissent": row["dissent"],
            "refinement_areas": _json(row["refinement_areas"], []), "parse_ok": bool(row["parse_ok"]),
            "agreement": row["agreement"], "details": _json(row["details"], {}), "calls": [],
        }
    # Each member's tools, by (round, model, instance): the member's call in that round.
    tools_of: dict[tuple, list[dict]] = {}
    for row in tool_calls:
        tools_of.setdefault((row["round"], row["model"], row["instance"]), []).append({
            "name": row["name"], "arguments": _json(row["arguments"], row["arguments"]),
            "output": row["output"], "error": row["error"],
        })
    for row in calls:
        call = dict(row)
        del call["run_id"]
        call["cancelled"] = bool(call["cancelled"])
        key = (call["round"], call["model"], call["instance"])
        call["tool_calls"] = tools_of.pop(key, []) if call["role"] == "member" else []
        rounds.setdefault(call["round"], _empty_round(call["round"]))["calls"].append(call)
    run["rounds"] = [rounds[number] for number in sorted(rounds)]
    for round_ in run["rounds"]:
        costs = [call["cost_usd"] for call in round_["calls"]]
        round_["priced_usd"] = sum(cost for cost in costs if cost is not None)
        round_["unpriced_calls"] = costs.count(None)
        round_["cost_usd"] = None if None in costs else round_["priced_usd"]
    return run


def load_run(run_id_or_prefix: str):
    """One recorded run as a ``record.RunRecord`` (None when nothing
    matches; ``AmbiguousRunId`` as ``get_run``): ``record_of_row``."""
    row = get_run(run_id_or_prefix)
    return None if row is None else record_of_row(row)


def record_of_row(row: dict):
    """``get_run``'s run as a ``record.RunRecord``, whichever version recorded it.

    A run that ended has its result JSON, read back with
    ``record_from_result``; a run whose process never finished it has none,
    and is read from its rows, what had arrived. Either way each round gets
    its verdict as its row has it (the fallback, candidates and notes, which
    only the result keeps, from the result) and its recorded calls (a round whose members were asked before a Ctrl-C
    has its calls and no verdict), and the status, notes, counts and totals
    are the row's, as ``get_run`` reads them: a run recorded before the
    outcome vocabulary has no counts (None), and one recorded before costs
    were has no prices (``unpriced`` None).
    """
    from ..core.record import AuditRecord, CallRecord, OutcomeRecord, RoundRecord, RunRecord, SettingsRecord
    from ..core.results import Usage, Verdict
    from ..core.record import member_of, record_from_result, verdict_of

    config = row["config"]
    if isinstance(row["result"], dict):
        record = record_from_result(row["result"])
    else:
        record = RunRecord(
            run_id=row["id"], prompt=row["prompt"] or "",
            settings=SettingsRecord(
                models=config.get("models") or [], arbiter=config.get("arbiter"), method=row["method"] or "arbiter",
                confidence_threshold=config.get("confidence_threshold"), stop_on=config.get("stop_on", "arbiter"),
                max_iterations=config.get("max_iterations"), max_cost=config.get("max_cost"), system=row["system"],
            ),
            outcome=OutcomeRecord(status=row["status"]),
            started=row["started"], finished=row["finished"], parent_run_id=row["parent_run_id"],
        )
    rounds = {round_.number: round_ for round_ in record.rounds}
    for stored in row["rounds"]:
        calls = [CallRecord(**{key: call[key] for key in CallRecord.model_fields}) for call in stored["calls"]]
        round_ = rounds.get(stored["round"])
        if round_ is None:  # the result has no such round: what had arrived, from the rows
            round_ = rounds[stored["round"]] = RoundRecord(
                number=stored["round"],
                members=[member_of({**call, "tokens": {"input": call["input_tokens"], "output": call["output_tokens"],
                                                       "unreported": int(call["input_tokens"] is None),
                                                       "priced_usd": call["cost_usd"] or 0.0,
                                                       "unpriced": int(call["cost_usd"] is None)}})
                         for call in stored["calls"] if call["role"] == "member"],
                usage=Usage(input=sum(c["input_tokens"] or 0 for c in stored["calls"]),
                            output=sum(c["output_tokens"] or 0 for c in stored["calls"]),
                            cost=stored["priced_usd"], unpriced=stored["unpriced_calls"]),
            )
        round_.calls = calls
        if stored["parse_ok"] is not None:  # the verdict as its row has it, with what only the result keeps
            columns = {key: value for key, value in stored.items() if key in Verdict.model_fields}
            round_.verdict = verdict_of({**(round_.verdict.model_dump() if round_.verdict else {}), **columns})
    record.rounds = [rounds[number] for number in sorted(rounds)]
    outcome = record.outcome
    outcome.status, outcome.notes, outcome.threshold_note = row["status"], row["notes"], row["threshold_note"]
    outcome.members, outcome.answered, outcome.agreeing = row["members"], row["answered"], row["agreeing"]
    outcome.not_asked, outcome.decisive = row["not_asked"], bool(row["decisive"])
    outcome.stopped_because = row["stopped_because"]
    outcome.has_answer = outcome.has_answer and record.verdict is not None and row["status"] not in UNANSWERED
    record.usage = Usage(input=row["input_tokens"] or 0, output=row["output_tokens"] or 0,
                         unreported=record.usage.unreported or sum(call["input_tokens"] is None
                                                                   for r in row["rounds"] for call in r["calls"]),
                         cost=row["priced_usd"] or 0.0,
                         unpriced=row["unpriced_calls"])
    record.config, record.name, record.error, record.rejudged_as = config, row["name"], row["error"], row["rejudged_as"]
    record.iterations = row["iterations"] or 0
    record.audits = [AuditRecord.model_validate(audit) for audit in row["audits"] if isinstance(audit, dict)]
    return record


def save_audit(run_id: str, audit) -> None:
    """Record a judge audit (``record.AuditRecord``) of run ``run_id``."""
    with connection() as conn, conn:
        conn.execute(
            "INSERT INTO consortium_audits (run_id, created, method, arbiter, shuffles, flip_rate, audit) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, audit.created, audit.method, audit.arbiter, len(audit.shuffles), audit.flip_rate,
             audit.model_dump_json()),
        )


def _empty_round(number: int) -> dict:
    return {
        "round": number, "synthesis": None, "confidence": None, "analysis": None, "dissent": None,
        "refinement_areas": [], "parse_ok": None, "agreement": None, "details": {},
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


# llm's own log of the consortium's answers (its tables, read and written
# through llm's code where it has one).


def llm_conversation(run_id: str) -> dict | None:
    """Where ``llm logs`` holds this run's answer: {"id": the conversation
    id (``llm logs --cid``), "turn": the entry's id, "runs": the ids of the
    recorded runs whose answers make up that conversation, in order}.

    None when llm logged no answer for it (``--no-log``, a failed run, the
    Python API) or has no log tables yet.
    """
    with connection() as conn:
        try:
            row = conn.execute(
                "SELECT id, thread_id FROM turns WHERE json_valid(response_json) "
                "AND json_extract(response_json, '$.metadata.run_id') = ?", (run_id,),
            ).fetchone()
            if row is None:
                return None
            runs = [r[0] for r in conn.execute(
                "SELECT json_extract(response_json, '$.metadata.run_id') FROM turns "
                "WHERE thread_id = ? AND json_valid(response_json) ORDER BY datetime_utc, rowid", (row[1],),
            ) if r[0]]
        except sqlite3.OperationalError:  # llm has not created its tables
            return None
    return {"id": row[1], "turn": row[0], "runs": runs}


def log_llm_response(response) -> None:
    """Log a consortium's answer (an llm response that has run) where
    ``llm logs`` shows it, in its conversation.

    llm's own migrations are not safe against two processes creating a new
    logs.db at the same moment, so they run under ``schema_lock``. They
    and the log entry are one transaction, which takes the write lock up
    front (llm's own would deadlock with another writer, failing at once):
    a migration that fails half-way (a full disk, a killed process) leaves
    logs.db as it was.
    """
    import sqlite_utils

    from .. import llm_adapter

    path = db_path()
    with schema_lock(path), closing(sqlite3.connect(path, timeout=busy_timeout())) as conn:
        conn.execute("BEGIN IMMEDIATE")
        llm_adapter.log_response(sqlite_utils.Database(conn), response)
        conn.commit()  # uncommitted, it is rolled back on close
