"""Runs asked from the page.

Each runs in a thread of the server's process through the consortium's
llm model, as ``llm consortium run`` runs one: the recorder writes it to
logs.db as it goes (so the page follows it like any run), and its answer
is logged in an llm conversation, which ``llm -c``, ``llm logs`` and the
page's "Continue" all continue.

Asks are limited: one running at a time for each client address, and
``MAX_ASKS`` at a time in all, so that whoever reaches the page cannot
start runs without end on the user's keys. A saved consortium's own limits
(``--max-cost``, and its rule that every model's price be known) hold for
asks as for any run.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from ...core.observer import Observer

MAX_ASKS = 4  # runs asked from the page at one time, from every client together


class AskError(Exception):
    """A mistake in what was asked (no such consortium, an unknown model, an
    empty prompt): said on the page, and no model was called. ``status``:
    the HTTP status the page is sent with."""

    status = 400


class Busy(AskError):
    """An ask over the limits: this client's run is still going, or too many are."""

    status = 429


class _Started(Observer):
    """Marks the run busy and tells the asker its id, as soon as it starts."""

    def __init__(self, future: Future, busy: set[str], lock: threading.Lock):
        self.future, self.busy, self.lock = future, busy, lock

    def run_started(self, run) -> None:
        with self.lock:
            self.busy.add(run.run_id)
        self.future.set_result(run.run_id)


class Asks:
    """The runs this server started and has not finished with (their answer
    is logged in llm's conversation after the run itself ends)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._asking: dict[str, int] = {}  # client address: its asks not yet ended (0 or 1)

    def busy(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._busy

    def start(self, name: str, prompt: str, after: str | None, client: str = "") -> Future:
        """Ask the saved consortium ``name`` for the client at address
        ``client``; continue the llm conversation of run ``after`` when
        given. Returns a future of the run's id, set once the run has
        started; raises ``AskError`` (from the future itself when a model is
        found missing only on the way), ``Busy`` over the limits."""
        from ...storage import store
        from ...core.config import ConsortiumConfig, ConsortiumConfigError
        from ..model import ConsortiumModel

        if not prompt.strip():
            raise AskError("The prompt is empty")
        if not store.logging_enabled():
            raise AskError("Logging is off (llm logs off), so a run would not be recorded: turn it on with "
                           "llm logs on")
        data = store.load_config(name)
        if data is None or data.get("ad_hoc"):
            raise AskError(f"No saved consortium is named {name!r}")
        try:
            config = ConsortiumConfig.from_dict(data)
        except ConsortiumConfigError as exc:
            raise AskError(f"The saved consortium {name!r} is not valid: {exc}") from None
        started: Future = Future()
        model = ConsortiumModel(name, config, observers=[_Started(started, self._busy, self._lock)])
        asker = self._conversation(after, model) if after else model.conversation()
        self._admit(client)
        try:
            threading.Thread(target=self._work, args=(asker, prompt, config.system_prompt, started, client),
                             name="consortium-ask", daemon=True).start()
        except RuntimeError:  # no thread could be started
            self._release(client)
            raise
        return started

    def _admit(self, client: str) -> None:
        with self._lock:
            if self._asking.get(client):
                raise Busy("Your last question is still running: wait for it to end, then ask again")
            if sum(self._asking.values()) >= MAX_ASKS:
                raise Busy(f"{MAX_ASKS} questions are running already: wait for one to end, then ask again")
            self._asking[client] = 1

    def _release(self, client: str) -> None:
        with self._lock:
            self._asking.pop(client, None)

    @staticmethod
    def _conversation(after: str, model):
        """The llm conversation run ``after``'s answer is in, continued by ``model``."""
        from ... import llm_adapter
        from ...storage import store

        found = store.llm_conversation(after)
        if found is None:
            raise AskError("That run's answer is not in llm logs, so there is no conversation to continue")
        with store.schema_lock(store.db_path()):  # llm migrates logs.db as it loads a conversation
            conversation = llm_adapter.conversation(found["id"], store.db_path())
        if conversation is None:
            raise AskError("That run's conversation is no longer in llm logs")
        conversation.model = model
        return conversation

    def _work(self, asker, prompt: str, system: str | None, started: Future, client: str) -> None:
        from ...core.config import ConsortiumConfigError
        from ..model import ask_and_log

        try:
            ask_and_log(asker, prompt, system, "llm-consortium serve")  # the page shows the record
        except ConsortiumConfigError as exc:  # before any model was called
            if not started.done():
                started.set_exception(AskError(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a run that fails is recorded, and shown, as failed
            if not started.done():
                started.set_exception(AskError(f"{type(exc).__name__}: {exc}"))
        finally:
            if started.done() and started.exception() is None:
                with self._lock:
                    self._busy.discard(started.result())
            self._release(client)
