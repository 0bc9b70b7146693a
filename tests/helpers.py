"""Helpers several test modules share (fixtures live in conftest.py)."""

import contextlib
import os
import re
import resource
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import llm
from click.testing import CliRunner
from llm.cli import cli


def invoke(*args, input=None, color=False, terminal=None):
    """``llm`` in-process, through its real CLI. color=True keeps escape
    sequences, as on a terminal (click strips some of them otherwise);
    ``terminal`` names the streams shown as on a terminal ("stderr",
    "stdout,stderr"; see llm_consortium/faces/terminal.py)."""
    if terminal is None:
        return CliRunner().invoke(cli, list(args), input=input, color=color, catch_exceptions=False)
    return TerminalRunner("stdout" in terminal).invoke(
        cli, list(args), input=input, color=color, env={"LLM_CONSORTIUM_TERMINAL": terminal}, catch_exceptions=False)


class TerminalRunner(CliRunner):
    """A ``CliRunner`` whose streams are buffered as Python buffers them on
    a terminal: stderr, and stdout when it is one, a line at a time (so
    ``result.output`` interleaves them in the order a terminal shows)."""

    def __init__(self, stdout_on_terminal: bool):
        super().__init__()
        self.stdout_on_terminal = stdout_on_terminal

    @contextlib.contextmanager
    def isolation(self, *args, **kwargs):
        with super().isolation(*args, **kwargs) as streams:
            sys.stdout.reconfigure(line_buffering=self.stdout_on_terminal)
            sys.stderr.reconfigure(line_buffering=True)
            yield streams


def llm_process(*args, file_size_limit=None, **popen_kwargs):
    """``python -m llm`` in a process of its own, for what needs one
    (signals, several processes at once, a real terminal, a file size
    limit: ``file_size_limit`` sets RLIMIT_FSIZE there, a disk full past
    that size). Tests that use it are marked ``slow``."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))

    return subprocess.Popen([sys.executable, "-m", "llm", *args],
                            preexec_fn=limit if file_size_limit is not None else None, **popen_kwargs)


def llm_run(*args, input=None, timeout=120, **popen_kwargs):
    """``subprocess.run`` of ``llm_process``: text in and out, captured."""
    return completed(llm_process(*args, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs),
                     input, timeout)


def python_process(code: str, *args, **popen_kwargs):
    """``python -c code *args`` in a process of its own (marked ``slow``)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], **popen_kwargs)


def python_run(code: str, *args, timeout=120):
    """``subprocess.run`` of ``python_process``: text out, captured."""
    return completed(python_process(code, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True), None, timeout)


def completed(proc, input, timeout) -> subprocess.CompletedProcess:
    with proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def llm_subprocess(*args, input=None, timeout=120):
    """``python -m llm`` in a fresh interpreter, as a user starts it."""
    return subprocess.run([sys.executable, "-m", "llm", *args], input=input, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL if input is None else None, timeout=timeout)


def db_path():
    return llm.user_dir() / "logs.db"


def db_rows(sql, params=()):
    """Rows of a query on logs.db in llm's current user dir, as dicts."""
    conn = sqlite3.connect(db_path())
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


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block under the README's ``heading``
    (``## heading``, or a ``### heading`` inside a section), as written."""
    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)
