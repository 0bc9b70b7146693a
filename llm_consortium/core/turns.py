"""Calls of one sync model take turns, and run in a daemon thread each.

A model's async implementation is used where llm has one, and all its
calls may be in flight at once. Otherwise the sync one runs in a worker
thread, and calls to one sync model take turns (see ``Turns``): sync-only
models are mostly local ones, which crash or corrupt their output when two
calls overlap, and two copies of a local model only fight over the CPU.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .handles import ModelHandle

async def in_daemon_thread(function, then=None):
    """Run a blocking function in a thread of its own and await its result;
    ``then()`` runs in that thread once the function has really returned.

    Not an executor: leaving one waits for its threads, so a sync model
    that hangs would hold the round past its timeout, and the process past
    Ctrl-C. A daemon thread is simply abandoned when its caller gives up.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(setter, value):
        if not future.done():  # the caller may have given up (timeout, quorum)
            setter(value)

    def worker():
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        finally:
            if then:
                then()
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    # In a copy of the caller's context, as a task or asyncio.to_thread would
    # run it: a context variable set around the run holds in the model too.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(worker,), name="consortium-sync-model", daemon=True).start()
    return await future


class Turns:
    """Calls of one sync model, one at a time, in the whole process.

    A turn is awaited on the event loop without blocking it, and given back
    by the thread that made the call once that call has really ended, even
    after its caller gave up (a timeout, a quorum): an abandoned call keeps
    its model busy until it is over. Waiters on any loop are served in order.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: deque = deque()

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._busy:
                self._busy = True
                return
            waiter = loop.create_future()
            self._waiting.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                granted = (loop, waiter) not in self._waiting
                if not granted:
                    self._waiting.remove((loop, waiter))
            if granted:  # the turn came as we were cancelled: pass it on
                self.give_back()
            raise

    def give_back(self) -> None:
        """From any thread: the next waiter's turn, or no one's."""
        while True:
            with self._lock:
                if not self._waiting:
                    self._busy = False
                    return
                loop, waiter = self._waiting.popleft()
            try:
                loop.call_soon_threadsafe(_grant, waiter)
                return
            except RuntimeError:  # that waiter's loop has closed
                continue


def _grant(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class Turn:
    """A turn taken; ``handed`` once a thread has it (and will give it back)."""

    turns: Turns
    handed: bool = False


_turns: dict[str, Turns] = {}
_turns_lock = threading.Lock()


async def take_turn(handle: ModelHandle) -> Turn | None:
    """Wait for a sync model's turn; None for an async model (no turns)."""
    if handle.is_async:
        return None
    model = handle.model
    key = f"{type(model).__module__}.{type(model).__qualname__}:{model.model_id}"
    with _turns_lock:
        turns = _turns.setdefault(key, Turns())
    await turns.take()
    return Turn(turns)
