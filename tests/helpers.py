"""Helpers several test modules share."""

import os
import select
import sqlite3

import llm


def db_rows(sql, params=()):
    """Rows of a query on logs.db in llm's current user dir, as dicts."""
    conn = sqlite3.connect(llm.user_dir() / "logs.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def read_until_closed(fds) -> dict[int, bytes]:
    """Everything written to each descriptor (pipes or pty masters) until
    the writer closes it; fails if nothing arrives for 30 s."""
    received = {fd: b"" for fd in fds}
    open_fds = set(received)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 30)
        assert ready, "llm produced no output for 30 s"
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # a pty reports EIO once the child has closed it
                data = b""
            if data:
                received[fd] += data
            else:
                open_fds.discard(fd)
    return received
