"""Running the engine from synchronous code.

Sync callers (the CLI, ``llm -m NAME``, ``orchestrate_sync``) share one
event loop that lives in a daemon thread for the life of the process. One
loop rather than ``asyncio.run`` per call: the HTTP clients of llm's
providers close themselves on the loop that made them, and a fresh loop per
call leaves them to complain on stderr about a closed loop. It also works
when the caller is itself inside a running loop (Jupyter, a web app).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from concurrent.futures import Future
from contextlib import contextmanager

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="consortium-loop", daemon=True).start()
    return _loop


class Submitted:
    """A coroutine running on the background loop."""

    def __init__(self, coroutine):
        self.settled = threading.Event()

        async def guarded():
            try:
                return await coroutine
            finally:
                self.settled.set()

        self.future: Future = asyncio.run_coroutine_threadsafe(guarded(), background_loop())

    def cancel(self, wait: float = 10.0) -> None:
        """Cancel, and give the coroutine time to record that it was cancelled."""
        self.future.cancel()
        self.settled.wait(wait)


def run_coroutine(coroutine):
    """Run a coroutine to completion from sync code; Ctrl-C cancels it
    cleanly, and so do SIGTERM and SIGHUP (see ``signals_interrupt``)."""
    with signals_interrupt():
        submitted = Submitted(coroutine)
        try:
            return submitted.future.result()
        except KeyboardInterrupt:
            submitted.cancel()
            raise


@contextmanager
def signals_interrupt():
    """Within this block SIGTERM and SIGHUP (a killed job, a closed
    terminal) raise KeyboardInterrupt, as Ctrl-C does, so that a run they
    end is cancelled and recorded as such rather than left 'running'.

    Only for a signal that still has its default action (ending the process
    on the spot): a program that handles it keeps its own handler. Only in
    the main thread, the one that may set handlers. The default action is
    put back at the end.
    """
    replaced = []
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):  # Windows has no SIGHUP
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _interrupt)
                replaced.append(signum)
    try:
        yield
    finally:
        for signum in replaced:
            signal.signal(signum, signal.SIG_DFL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
