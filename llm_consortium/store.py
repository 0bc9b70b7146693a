"""The plugin's tables in llm's own log database: saved configurations,
the schema and its migrations, and the connection every writer uses.

llm imports the plugin, and calls ``register_models`` (which reads saved
configurations), on every command, so this module imports only the standard
library at the top and ``llm`` inside functions. Recording runs, which needs
the engine, lives in ``recorder``.

Every table is prefixed ``consortium_`` and none has a foreign key into
llm's tables. Writes take the write lock up front (``BEGIN IMMEDIATE``) and
wait up to ten seconds for it, so several processes can record at once.
Schema changes, the plugin's and llm's own migrations, are serialised
across processes by ``schema_lock``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

# How long a write waits for another connection's lock, and the end of a
# run for its record to be written. Tests shorten it through the variable.
BUSY_TIMEOUT_SECONDS = float(os.environ.get("LLM_CONSORTIUM_BUSY_TIMEOUT", 10))

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
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level="IMMEDIATE")
    try:
        ensure_schema(conn, path)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


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


def save_config(name: str, config: dict) -> None:
    """Save (or replace) a named configuration."""
    conn = connect()
    try:
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO consortium_configs (name, config, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(config), now()),
            )
    finally:
        conn.close()


def load_config(name: str) -> dict | None:
    """The configuration saved as ``name``, or None."""
    conn = connect()
    try:
        row = conn.execute("SELECT config FROM consortium_configs WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0]) if row else None


def list_configs() -> list[tuple[str, dict, str]]:
    """Every saved configuration as (name, config, created_at), by name."""
    conn = connect()
    try:
        rows = conn.execute("SELECT name, config, created_at FROM consortium_configs ORDER BY name").fetchall()
    finally:
        conn.close()
    return [(name, json.loads(config), created_at) for name, config, created_at in rows]


def remove_config(name: str) -> bool:
    """Delete a saved configuration; False if there was none by that name."""
    conn = connect()
    try:
        with conn:
            cursor = conn.execute("DELETE FROM consortium_configs WHERE name = ?", (name,))
    finally:
        conn.close()
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
    conn = sqlite3.connect(uri, uri=True, timeout=timeout)
    try:
        return conn.execute("SELECT name, config FROM consortium_configs ORDER BY name").fetchall()
    finally:
        conn.close()
