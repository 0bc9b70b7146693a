"""Whether stdout or stderr is a terminal, which decides what the faces
show: live progress on stderr, the answer last (made printable) on stdout.

The stream's own ``isatty()`` decides, unless ``LLM_CONSORTIUM_TERMINAL``
is set: then the streams it names (``stdout``, ``stderr``, or both,
comma-separated; empty for neither) count as terminals and the others do
not. Tests set it to see the terminal's view under click's ``CliRunner``;
a user can set it too, to keep live progress through a pipe (``| tee``).
"""

import os

VARIABLE = "LLM_CONSORTIUM_TERMINAL"


def is_terminal(stream, name: str) -> bool:
    """Whether ``stream``, which is ``name`` ("stdout" or "stderr"), is shown on a terminal."""
    chosen = os.environ.get(VARIABLE)
    if chosen is None:
        return stream.isatty()
    return name in {part.strip() for part in chosen.split(",")}
