"""The plugin's tables in llm's own log database: saved configurations,
the schema and its migrations, and the connection every writer uses.

llm imports the plugin, and calls ``register_models`` (which reads saved
configurations), on every command, so this module imports only the standard
library at the top and ``llm`` inside functions. Recording runs, which needs
the engine, lives in ``recorder``.

Every table is prefixed ``consortium_`` and none has a foreign key into
llm's tables. Writes take the write lock up front (``BEGIN IMMEDIATE``) and
wait up to ten seconds for it, so several processes can record at once.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

BUSY_TIMEOUT_SECONDS = 10

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
]


def user_dir() -> Path:
    """llm's user directory (honours ``LLM_USER_PATH``), looked up on each call."""
    import llm

    return llm.user_dir()


def db_path() -> Path:
    """llm's log database, where the plugin's tables live."""
    return user_dir() / "logs.db"


def logging_enabled() -> bool:
    """False after ``llm logs off`` (which creates ``logs-off`` in the user dir)."""
    return not (user_dir() / "logs-off").exists()


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat()


def connect(check_same_thread: bool = True) -> sqlite3.Connection:
    """Open logs.db (creating it if needed) with the plugin's schema in place.

    ``with conn:`` around a write begins it with ``BEGIN IMMEDIATE``: the
    write lock is taken at once, waiting for another writer if need be,
    rather than failed on half-way through.
    """
    conn = sqlite3.connect(
        db_path(),
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level="IMMEDIATE",
        check_same_thread=check_same_thread,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
        ensure_schema(conn)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Apply every migration not applied yet, each recorded in ``consortium_migrations``.

    The usual case (all applied) is one read. Otherwise the pending ones run
    in one transaction holding the write lock, and are re-checked under it,
    so two processes starting at once apply each migration once.
    """
    if not _pending_migrations(conn):
        return
    with conn:
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
    """
    path = db_path()
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
            rows = conn.execute("SELECT name, config FROM consortium_configs ORDER BY name").fetchall()
        finally:
            conn.close()
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
