"""`llm` processes that start without importing llm again.

Most of the CPU of an `llm` process the tests start is its first second:
importing llm, openai and the plugins (about 1.2 s each, some forty times
in the suite). This module starts, once per test process, a server that
has imported ``llm.cli`` (plugins included) and forks a new `llm` process
for each request; the test process is their child subreaper, so each one
is its child, as with ``subprocess.Popen``: ``wait``, ``communicate``,
signals and exit codes behave as usual.

A warm process is a real process running llm's real CLI, with its own
stdin, stdout and stderr (pipes or pseudo-terminals), environment, working
directory, session and file size limit; what differs from ``python -m llm``
is only that the imports were done before the fork (llm's, and those a run
does first: see RUN_IMPORTS). Tests about a fresh interpreter itself (what
importing the plugin loads, a user's own ``python -m llm``, non-UTF-8
arguments and input) start ``python -m llm`` as before.

It needs Linux (``prctl``, ``/proc/self/fd``) and overrides CPython's
``Popen._execute_child`` (its POSIX signature, as of 3.11).

Run as a script (``python warm_llm.py SOCKET``), this file is the server.
"""

import atexit
import ctypes
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
RUN_IMPORTS = ("llm_consortium.core.engine", "llm_consortium.storage.recorder", "llm_consortium.faces.display",
               "llm_consortium.faces.model", "genai_prices", "concurrent.futures", "jiter",
               "openai.resources.chat.completions", "anyio", "httpcore2", "truststore")


class WarmLlm(subprocess.Popen):
    """``subprocess.Popen(["llm", *args], ...)`` served by the warm server.
    Any Popen argument but ``preexec_fn``, ``pass_fds``, ``executable``,
    ``user``/``group`` and ``process_group``; ``file_size_limit`` sets
    RLIMIT_FSIZE in the new process (a disk that is full past that size)."""

    def __init__(self, args, *, file_size_limit: int | None = None, code: str | None = None, **kwargs):
        self.file_size_limit = file_size_limit
        self.code = code
        super().__init__(["llm" if code is None else "python -c", *args], **kwargs)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       restore_signals, gid, gids, uid, umask, start_new_session, *unsupported):
        if preexec_fn or pass_fds or executable or shell or gid is not None or uid is not None or any(
                value not in (None, -1) for value in unsupported):
            raise ValueError("WarmLlm starts llm with its own stdio, env, cwd and session only")
        streams = [p2cread, c2pwrite, errwrite]
        request = {
            "args": args[1:],
            "code": self.code,
            "cwd": os.fspath(cwd) if cwd else os.getcwd(),
            "env": dict(os.environ if env is None else env),
            "new_session": start_new_session,
            "file_size_limit": self.file_size_limit,
        }
        self.pid = _server().spawn(request, [fd if fd != -1 else n for n, fd in enumerate(streams)])
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)


class WarmPython(WarmLlm):
    """``subprocess.Popen([sys.executable, "-c", code, *args], ...)`` served
    by the warm server: for scripts that use llm or this package, not for
    what a fresh interpreter imports."""

    def __init__(self, code: str, args=(), **kwargs):
        super().__init__(args, code=code, **kwargs)


class _Server:
    def __init__(self):
        self.path = os.path.join(tempfile.mkdtemp(prefix="warm-llm-"), "socket")
        # Children of the server's children become ours once their parent exits.
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.process = subprocess.Popen([sys.executable, __file__, self.path], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the warm llm server did not start")
            time.sleep(0.02)

    def spawn(self, request: dict, fds: list[int]) -> int:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(self.path)
            message = json.dumps(request).encode()
            socket.send_fds(conn, [len(message).to_bytes(8, "big")], fds)
            conn.sendall(message)
            reply = _read_all(conn)
        if not reply.isdigit():
            raise RuntimeError(f"the warm llm server could not start llm: {reply!r}")
        return int(reply)

    def close(self):
        self.process.kill()
        self.process.wait()


_running: _Server | None = None


def _server() -> _Server:
    global _running
    if _running is None or _running.process.poll() is not None:
        _running = _Server()
        atexit.register(_running.close)
    return _running


def _read_all(conn) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def _recv_request(conn) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, 8, 3)
    size = int.from_bytes(header, "big")
    message = b""
    while len(message) < size:
        message += conn.recv(size - len(message))
    return json.loads(message), fds


def serve(path: str) -> tuple[dict, list[int]]:
    """Fork a new `llm` process for each request until this process is one
    of them (the grandchild forked for a request): return its request."""
    import importlib

    import llm.cli  # noqa: F401 -- llm, openai and the plugins: the second this server exists to save

    # What every consortium run imports once it starts, another half second
    # of CPU: the engine, the recorder, the prices, openai's async client.
    for module in RUN_IMPORTS:
        importlib.import_module(module)
    gc.freeze()  # what is imported stays out of the children's collections (and their copied pages)

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".tmp")
    listener.listen()
    os.rename(path + ".tmp", path)
    while True:
        conn, _ = listener.accept()
        request, fds = _recv_request(conn)
        read_pid, write_pid = os.pipe()
        middle = os.fork()
        if middle == 0:
            child = os.fork()
            if child == 0:
                listener.close()
                conn.close()
                os.close(read_pid)
                os.close(write_pid)
                return request, fds
            os.write(write_pid, str(child).encode())
            os._exit(0)
        os.close(write_pid)
        child = os.read(read_pid, 32)
        os.close(read_pid)
        os.waitpid(middle, 0)  # it has exited: its child is now the test process's child
        for fd in fds:
            os.close(fd)
        conn.sendall(child)
        conn.close()


def become_llm(request: dict, fds: list[int]):
    """What ``subprocess.Popen`` and ``python -m llm`` (or ``-c``) would have
    done before running llm (or the code): session, stdio, other descriptors
    closed, cwd, environment, sys.stdin/stdout/stderr as Python makes them,
    then llm's ``__main__`` (or the code as ``__main__``)."""
    import io
    import resource
    import runpy
    import types

    if request["new_session"]:
        os.setsid()
    if request["file_size_limit"] is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_size_limit"], resource.RLIM_INFINITY))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:
                os.close(int(name))
            except OSError:  # the listing's own descriptor, closed already
                pass
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    encoding, errors = sys.stdout.encoding, sys.stdout.errors  # as this interpreter's startup chose them
    streams = []
    for fd, name, mode in ((0, "<stdin>", "rb"), (1, "<stdout>", "wb"), (2, "<stderr>", "wb")):
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = name
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        streams.append(io.TextIOWrapper(buffered, encoding, "backslashreplace" if fd == 2 else errors,
                                        newline="\n", line_buffering=fd == 2 or (fd == 1 and raw.isatty())))
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
    if request["code"] is None:
        sys.argv = ["llm", *request["args"]]
        sys.path[0] = os.getcwd()
        runpy.run_module("llm", run_name="__main__", alter_sys=True)
    else:  # as python -c does: a new __main__, argv[0] "-c", the current directory first on the path
        sys.argv = ["-c", *request["args"]]
        sys.path[0] = ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)


if __name__ == "__main__":
    become_llm(*serve(sys.argv[1]))
