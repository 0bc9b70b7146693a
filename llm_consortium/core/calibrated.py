"""A calibrated probability of being right, p(right), from a map that
``llm consortium eval --calibrate`` fitted (``evaluation.calibration``) and
stored with a saved consortium.

The map is data: ``{"score": "agreement" | "logistic", "weights": [b0,
b_agreement, b_confidence] (logistic only), "points": [[x, p], ...],
"items": n, "date": ...}``. The score is the measured agreement, or a
logistic combination of agreement and the arbiter's confidence; ``points``
are the corners of a non-decreasing piecewise-linear map from the score to
the observed accuracy (pool-adjacent-violators), flat beyond its ends.

A map holds for the panel it was fitted on: ``fingerprint`` names the
members and the arbiter, and a map whose fingerprint differs from the
consortium's is not applied.
"""

from __future__ import annotations

import hashlib
import json
import math


def fingerprint(models: list[str], arbiter: str) -> str:
    """The members (in any order, counts included) and the arbiter a map was fitted for."""
    text = json.dumps({"models": sorted(models), "arbiter": arbiter})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


def score(fitted: dict, agreement: float | None, confidence: float | None) -> float | None:
    """The map's score for one verdict; None when a number it needs is unknown."""
    if agreement is None:
        return None
    if fitted["score"] == "agreement":
        return agreement
    if confidence is None:
        return None
    b0, b1, b2 = fitted["weights"]
    return sigmoid(b0 + b1 * agreement + b2 * confidence)


def interpolate(points: list[list[float]], x: float) -> float:
    """The piecewise-linear map through ``points`` (x non-decreasing) at ``x``, flat beyond the ends."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y1 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def p_right(fitted: dict, agreement: float | None, confidence: float | None) -> float | None:
    """p(right) for a verdict with this agreement and confidence; None when its score is unknown."""
    s = score(fitted, agreement, confidence)
    return None if s is None else interpolate(fitted["points"], s)


def for_run(stored: dict | None, models: list[str], arbiter: str, method: str) -> tuple[dict | None, str | None]:
    """The map that applies to a run of ``method`` by these members and
    arbiter, from a saved consortium's calibration (``stored``: {"fingerprint",
    "methods": {method: map}}), or None and why not."""
    if not stored:
        return None, "the consortium has no calibration"
    if not isinstance(stored, dict) or not isinstance(stored.get("methods"), dict):
        return None, "its calibration cannot be read"
    if stored.get("fingerprint") != fingerprint(models, arbiter):
        return None, "its calibration was fitted for other members or another arbiter"
    fitted = stored["methods"].get(method)
    if fitted is None:
        return None, f"its calibration has no map for the {method} method"
    read = readable(fitted)
    if read is None:
        return None, "its calibration cannot be read"
    return read, None


def readable(fitted) -> dict | None:
    """A stored map (written by hand, or broken) as ``p_right`` reads it, its
    numbers made numbers (a number written as text counts); None when it
    cannot be read."""
    try:
        points = [[float(x), float(p)] for x, p in fitted["points"]]
        weights = [float(w) for w in fitted["weights"]] if fitted["score"] == "logistic" else [0.0] * 3
        items = int(fitted["items"])
    except (KeyError, TypeError, ValueError):
        return None
    numbers = [v for point in points for v in point] + weights
    if not (fitted["score"] in ("agreement", "logistic") and len(weights) == 3 and bool(points)
            and all(math.isfinite(v) for v in numbers) and all(0 <= p <= 1 for _, p in points)):
        return None
    logistic = {"weights": weights} if fitted["score"] == "logistic" else {}
    return {**fitted, "points": sorted(points), "items": items, **logistic}
