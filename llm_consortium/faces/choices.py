"""``--method``, as ``run``, ``save`` and ``rejudge`` take it: the methods
are the registry's (``core.methods``), read when they are offered or
checked rather than when the commands are built (llm builds them on every
command), so that a method's file is all it takes to offer it."""

from __future__ import annotations

import click

from ..core import methods


class MethodChoice(click.Choice):
    """A choice of the registry's methods."""

    def __init__(self):  # no fixed list to store: ``choices`` reads the registry
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return methods.names()


class MethodOption(click.Option):
    """An option whose help ends with each method's own line (the methods
    are imported only when help is shown)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, type=MethodChoice(), **kwargs)

    def get_help_record(self, ctx):
        flags, text = super().get_help_record(ctx)
        return flags, text + ". " + "; ".join(f"{name}: {methods.help_text(name)}" for name in methods.names())
