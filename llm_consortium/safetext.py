"""Untrusted text made safe to carry, store and show.

Model output may hold any code point: lone surrogates (which neither
SQLite, UTF-8 streams nor HTTP bodies can encode), terminal escape
sequences, forged tags. ``clean`` is applied once, where text enters the
plugin (a model's reply, an error message, the prompt), so everything
downstream can encode it.
"""

from __future__ import annotations

import re

# A Python str holds a surrogate only when it is unpaired: a JSON
# "\ud83d\ude00" pair decodes to one code point, so any left are lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)
