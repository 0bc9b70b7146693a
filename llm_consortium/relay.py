"""Streaming only the final round's synthesis.

The arbiter is asked for ``<confidence>`` before ``<synthesis>``, so by the
time a synthesis starts we know whether its round is the last one; a
synthesis that a later round would replace never reaches the output.
"""

from __future__ import annotations

from .config import ConsortiumConfig
from .engine import Observer
from .parsing import SynthesisStream, parse_confidence


class SynthesisRelay(Observer):
    """Passes the final round's synthesis to ``send`` as the arbiter writes it."""

    def __init__(self, config: ConsortiumConfig, send):
        self.config = config
        self.send = send
        self.sent = ""

    def arbiter_started(self, run, round_number):
        self.round_number = round_number
        self.raw = ""
        self.final = None  # unknown until the confidence has been read
        self.stream = SynthesisStream()

    def arbiter_chunk(self, run, round_number, chunk):
        self.raw += chunk
        if self.final is None:
            if "<synthesis" not in self.raw.lower():
                return
            self.final = self._is_final()
            chunk = self.raw  # the stream starts from the whole reply so far
        if self.final:
            self._send(self.stream.feed(chunk))

    def _is_final(self) -> bool:
        if self.round_number >= self.config.max_iterations:
            return True
        lower = self.raw.lower()
        start, end = lower.find("<confidence"), lower.find("</confidence>")
        if start < 0 or end < start:
            return False  # synthesis came before confidence: wait for the end
        confidence = parse_confidence(self.raw[self.raw.index(">", start) + 1 : end])
        return (
            confidence is not None
            and confidence >= self.config.confidence_threshold
            and self.round_number >= self.config.min_iterations
        )

    def rest(self, synthesis: str) -> str:
        """What of the final synthesis has not been streamed yet."""
        if synthesis.startswith(self.sent):
            return synthesis[len(self.sent) :]
        return "" if self.sent else synthesis

    def _send(self, text: str) -> None:
        if text:
            self.sent += text
            self.send(text)
