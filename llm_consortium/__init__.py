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
]

_LAZY = {
    "ConsortiumConfig": "config",
    "ConsortiumConfigError": "config",
    "ConsortiumError": "config",
    "ConsortiumOrchestrator": "engine",
    "Observer": "engine",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
