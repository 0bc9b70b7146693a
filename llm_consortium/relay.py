"""Streaming only the final round's synthesis.

The arbiter is asked for ``<confidence>`` before ``<synthesis>``, so by the
time a synthesis starts we know whether its round is the last one; a
synthesis that a later round would replace never reaches the output.
"""

from __future__ import annotations

from .config import ConsortiumConfig
from .engine import Observer
from .parsing import SynthesisStream, parse_arbiter


class SynthesisRelay(Observer):
    """Passes the final round's synthesis to ``send`` as the arbiter writes it.

    Each arbiter attempt is read with a fresh ``SynthesisStream`` (which skips
    reasoning blocks). When its synthesis opens, the confidence written
    before it decides whether this round is the last: only then is the
    synthesis passed on. An arbiter that writes the synthesis first, or a
    retry after text was already sent, falls back to sending the final
    synthesis at the end (``rest``).
    """

    def __init__(self, config: ConsortiumConfig, send):
        self.config = config
        self.send = send
        self.sent = ""
        self.frozen = False

    def arbiter_started(self, run, round_number):
        self.frozen = self.frozen or bool(self.sent)  # a retry must not stream a second copy
        self.round_number = round_number
        self.raw = ""
        self.final = None  # unknown until the synthesis opens
        self.stream = SynthesisStream()

    def arbiter_chunk(self, run, round_number, chunk):
        self.raw += chunk
        text = self.stream.feed(chunk)
        if self.final is None and self.stream.started:
            self.final = self._is_final(self.raw[: self.raw.lower().rfind("<synthesis")])
        if self.final and not self.frozen:
            self._send(text)

    def _is_final(self, before_synthesis: str) -> bool:
        if self.round_number >= self.config.max_iterations:
            return True
        confidence = parse_arbiter(before_synthesis).confidence
        return confidence >= self.config.confidence_threshold and self.round_number >= self.config.min_iterations

    def rest(self, synthesis: str) -> str:
        """What of the final synthesis has not been sent yet. If what was sent
        is not its start (a reply the stream read differently from the
        parser), the whole synthesis follows on a new paragraph."""
        if synthesis.startswith(self.sent):
            return synthesis[len(self.sent) :]
        return "\n\n" + synthesis

    def _send(self, text: str) -> None:
        if text:
            self.sent += text
            self.send(text)
