"""llm-consortium: ask several models at once, let an arbiter combine their
answers, and iterate until it is confident.

llm imports every plugin on every command, so this module imports nothing
heavy: the public names below load their modules on first use.
"""

from __future__ import annotations

import llm

__all__ = [
    "ConsortiumConfig",
    "ConsortiumConfigError",
    "ConsortiumError",
    "ConsortiumOrchestrator",
    "Observer",
    "RunRecorder",
]

_LAZY = {
    "ConsortiumConfig": "core.config",
    "ConsortiumConfigError": "core.config",
    "ConsortiumError": "core.config",
    "ConsortiumOrchestrator": "core.engine",
    "Observer": "core.observer",
    "RunRecorder": "storage.recorder",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@llm.hookimpl
def register_commands(cli):
    from .faces.cli import consortium

    cli.add_command(consortium)


@llm.hookimpl
def register_models(register):
    """Each saved consortium is a model. One small query; nothing else is
    imported unless there is something saved."""
    from .storage.store import saved_configs_fast

    saved = saved_configs_fast()
    if not saved:
        return
    from .core.config import ConsortiumConfig
    from .faces.model import AsyncConsortiumModel, ConsortiumModel

    for name, data in saved:
        try:
            config = ConsortiumConfig.from_dict(data)
        except Exception:  # noqa: BLE001 - a broken saved row must never break every llm command
            continue
        register(ConsortiumModel(name, config), AsyncConsortiumModel(name, config))


@llm.hookimpl
def register_tools(register):
    """``llm -T 'Consortium("NAME")'``: a saved consortium as a tool. llm
    calls this on every prompt; the module holds only the class."""
    from .faces.tool import Consortium

    register(Consortium)
