"""Untrusted text made safe to carry, store and show.

Model output may hold any code point: lone surrogates (which neither
SQLite, UTF-8 streams nor HTTP bodies can encode), terminal escape
sequences, forged tags. ``clean`` is applied once, where text enters the
plugin (a model's reply, an error message, the prompt), so everything
downstream can encode it. ``printable`` is applied where text is shown in
a terminal, and only there: what is stored keeps every byte. ``visible``
is what both faces apply to bidirectional controls: shown, never applied.
"""

from __future__ import annotations

import re

# A Python str holds a surrogate only when it is unpaired: a JSON
# "\ud83d\ude00" pair decodes to one code point, so any left are lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


# What a terminal would act on rather than show, removed whole where it is a
# complete sequence (7-bit ESC forms and their 8-bit C1 forms), then any
# control character left: C0 but newline and tab (a carriage return could
# overwrite a line), DEL and C1.
_TERMINAL_CONTROL = re.compile(
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC, DCS, SOS, PM, APC
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[ -/]*[0-~]"  # any other escape sequence
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_WHITESPACE = re.compile(r"\s+")
# The bidirectional embeddings, overrides and isolates: applied, they make
# text read otherwise than it is stored (a "Trojan Source" answer).
_BIDI_CONTROL = re.compile("[\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with each bidirectional control shown as its name, ``[U+202E]``, instead of applied."""
    return _BIDI_CONTROL.sub(lambda match: f"[U+{ord(match.group()):04X}]", text)


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: escape sequences and control
    characters removed (newlines and tabs kept), bidirectional controls
    shown (``visible``), lone surrogates replaced."""
    return visible(_TERMINAL_CONTROL.sub("", clean(text)))


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def single_line(text: str) -> str:
    """``printable(text)`` on one line: each run of whitespace becomes a space."""
    return _WHITESPACE.sub(" ", printable(text)).strip()
