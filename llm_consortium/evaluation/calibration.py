"""``llm consortium eval --calibrate``: fit, per method, a monotone map from
one score to the observed accuracy on the user's labelled items, measure it
on held-out folds, and make the map that a saved consortium stores (applied
at run time by ``core.calibrated``).

Two scores are tried, and the one whose held-out ECE is lower is kept; the
combination must also have a held-out Brier score no worse than the
agreement's (else the agreement, the simpler, is kept: a confidence that is
noise can lower a binned ECE by chance while making the forecast worse):

* ``agreement``: the measured agreement alone;
* ``logistic``: a logistic regression of being right on the agreement and
  the arbiter's own confidence (Newton's method with a small ridge penalty).

The score is then mapped to accuracy by isotonic regression
(pool-adjacent-violators): the non-decreasing step function closest to
the 0/1 outcomes in squared error, kept as the corners of a piecewise-linear
map (``core.calibrated.interpolate``).

Measured on held-out folds only: the items are shuffled (a fixed seed) into
``FOLDS`` folds, each fold's items are scored by a map fitted on the other
folds, and the ECE (``evalreport.calibration``, its bins) of those
out-of-fold probabilities is reported with a bootstrap 95 % interval over
the items. "Before" is the raw arbiter confidence and the raw agreement
read as probabilities, on the same items (nothing is fitted on them). The
map stored is fitted on all the items.

Only items where the method gave an answer with a measured agreement
count; a method with fewer than ``MIN_ITEMS`` of them is not calibrated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date

from ..core.ballots import percentile
from ..core.calibrated import fingerprint, p_right, sigmoid
from .evalreport import BOOTSTRAP_SEED, calibration

FOLDS = 5
MIN_ITEMS = 20
SCORES = ("agreement", "logistic")
ECE_BOOTSTRAP_SAMPLES = 1000
RIDGE = 1e-2  # the logistic fit's L2 penalty: finite weights when the data separate


def pav(xs: list[float], ys: list[float]) -> list[list[float]]:
    """Isotonic regression of ``ys`` on ``xs`` by pool-adjacent-violators:
    the corners [x, p] of the non-decreasing map, each block of pooled items
    flat from its smallest to its largest x (equal xs always pooled)."""
    pooled: dict[float, list[float]] = {}  # equal xs first: [sum of ys, count]
    for x, y in zip(xs, ys):
        pooled.setdefault(x, [0.0, 0])
        pooled[x][0] += y
        pooled[x][1] += 1
    blocks: list[list[float]] = []  # [sum of ys, count, lowest x, highest x]
    for x in sorted(pooled):
        blocks.append([*pooled[x], x, x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count, _, high = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
            blocks[-1][3] = high
    points = []
    for total, count, low, high in blocks:
        points += [[low, total / count]] + ([[high, total / count]] if high != low else [])
    return points


def fit_logistic(features: list[tuple[float, float]], ys: list[float], iterations: int = 50) -> list[float]:
    """[b0, b1, b2] of p = sigmoid(b0 + b1 * a + b2 * c), by Newton's method
    on the ridge-penalised log-likelihood (the intercept unpenalised)."""
    weights = [0.0, 0.0, 0.0]
    rows = [(1.0, a, c) for a, c in features]
    for _ in range(iterations):
        gradient = [-RIDGE * w if k else 0.0 for k, w in enumerate(weights)]
        hessian = [[RIDGE if (i == j and i) else 0.0 for j in range(3)] for i in range(3)]
        for row, y in zip(rows, ys):
            p = sigmoid(sum(w * x for w, x in zip(weights, row)))
            for i in range(3):
                gradient[i] += (y - p) * row[i]
                for j in range(3):
                    hessian[i][j] += p * (1 - p) * row[i] * row[j]
        step = solve(hessian, gradient)
        weights = [w + s for w, s in zip(weights, step)]
        if max(abs(s) for s in step) < 1e-9:
            break
    return weights


def solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """``matrix`` x = ``vector`` by Gaussian elimination with partial pivoting;
    a singular direction (a feature with no spread) gets 0."""
    n = len(vector)
    a = [row[:] + [v] for row, v in zip(matrix, vector)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        if abs(a[col][col]) < 1e-12:
            continue
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col])]
    return [a[i][n] / a[i][i] if abs(a[i][i]) >= 1e-12 else 0.0 for i in range(n)]


def fit_map(kind: str, agreement: list[float], confidence: list[float], correct: list[bool]) -> dict:
    """A map (``core.calibrated``'s data) of score ``kind``, fitted on these items."""
    ys = [float(c) for c in correct]
    if kind == "agreement":
        return {"score": "agreement", "points": pav(agreement, ys)}
    weights = fit_logistic(list(zip(agreement, confidence)), ys)
    scores = [sigmoid(weights[0] + weights[1] * a + weights[2] * c) for a, c in zip(agreement, confidence)]
    return {"score": "logistic", "weights": weights, "points": pav(scores, ys)}


def out_of_fold(kind: str, agreement, confidence, correct, folds: int = FOLDS, seed: int = BOOTSTRAP_SEED):
    """Each item's p(right) from a map fitted without its fold."""
    order = list(range(len(correct)))
    random.Random(seed).shuffle(order)
    fold_of = {item: position % folds for position, item in enumerate(order)}
    predictions = [0.0] * len(correct)
    for fold in range(folds):
        train = [i for i in order if fold_of[i] != fold]
        fitted = fit_map(kind, [agreement[i] for i in train], [confidence[i] for i in train],
                         [correct[i] for i in train])
        for i in order:
            if fold_of[i] == fold:
                predictions[i] = p_right(fitted, agreement[i], confidence[i])
    return predictions


@dataclass
class Ece:
    """An expected calibration error, with its bootstrap 95 % interval over the items."""

    value: float
    interval: tuple[float, float]

    def text(self) -> str:
        return f"{self.value:.3f} [{self.interval[0]:.3f}, {self.interval[1]:.3f}]"

    def to_dict(self) -> dict:
        return {"ece": round(self.value, 4), "interval_95": [round(x, 4) for x in self.interval]}


def ece_with_interval(probabilities: list[float], correct: list[bool], samples: int = ECE_BOOTSTRAP_SAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> Ece:
    rng = random.Random(seed)
    n = len(correct)
    resampled = []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        resampled.append(calibration([probabilities[i] for i in idx], [correct[i] for i in idx]).ece)
    resampled.sort()
    return Ece(calibration(probabilities, correct).ece, (percentile(resampled, 0.025), percentile(resampled, 0.975)))


def brier(probabilities: list[float], correct: list[bool]) -> float:
    """The mean squared difference between p(right) and being right."""
    return sum((p - ok) ** 2 for p, ok in zip(probabilities, correct)) / len(correct)


@dataclass
class MethodFit:
    """One method's calibration: how it was before and after, on held-out folds, and its map."""

    method: str
    items: int  # items it was fitted on (an answer with a measured agreement)
    before: dict[str, Ece] = field(default_factory=dict)  # "confidence", "agreement": read as probabilities
    after: dict[str, Ece] = field(default_factory=dict)  # per score, on held-out folds
    brier: dict[str, float] = field(default_factory=dict)  # per score, on held-out folds
    score: str | None = None  # the score kept
    map: dict | None = None  # None: too few items
    skipped: str | None = None

    def to_dict(self) -> dict:
        return {
            "method": self.method, "items": self.items, "skipped": self.skipped, "score": self.score,
            "before": {k: v.to_dict() for k, v in self.before.items()},
            "after_held_out": {k: v.to_dict() for k, v in self.after.items()},
            "brier_held_out": {k: round(v, 4) for k, v in self.brier.items()},
            "map": self.map,
        }


def fit_method(method: str, correct: list[bool], confidence: list[float | None],
               agreement: list[float | None], folds: int = FOLDS) -> MethodFit:
    """The calibration of one method's row: items with an answer and a measured agreement."""
    kept = [i for i, (a, c) in enumerate(zip(agreement, confidence)) if a is not None and c is not None]
    fit = MethodFit(method, len(kept))
    if len(kept) < MIN_ITEMS:
        fit.skipped = f"{len(kept)} items with a measured agreement, fewer than the {MIN_ITEMS} needed"
        return fit
    a = [agreement[i] for i in kept]
    c = [confidence[i] for i in kept]
    y = [bool(correct[i]) for i in kept]
    fit.before = {"confidence": ece_with_interval(c, y), "agreement": ece_with_interval(a, y)}
    predictions = {kind: out_of_fold(kind, a, c, y, folds) for kind in SCORES}
    fit.after = {kind: ece_with_interval(predictions[kind], y) for kind in SCORES}
    fit.brier = {kind: brier(predictions[kind], y) for kind in SCORES}
    # The combination must be better calibrated and no worse a forecast: a confidence
    # that is noise only reorders items within the agreement's bins, which ECE barely sees.
    better = fit.after["logistic"].value < fit.after["agreement"].value and \
        fit.brier["logistic"] <= fit.brier["agreement"]
    fit.score = "logistic" if better else "agreement"
    fit.map = {**fit_map(fit.score, a, c, y), "items": len(kept), "date": date.today().isoformat()}
    return fit


def fit_rows(rows) -> list[MethodFit]:
    """A ``MethodFit`` for every method row of an eval."""
    return [fit_method(r.name, r.correct, r.confidence, r.agreement) for r in rows if r.kind == "method"]


def stored(fits: list[MethodFit], models: list[str], arbiter: str) -> dict | None:
    """What the saved consortium stores: its fingerprint and a map per
    method calibrated; None when no method was."""
    methods = {fit.method: fit.map for fit in fits if fit.map}
    if not methods:
        return None
    return {"fingerprint": fingerprint(models, arbiter), "date": date.today().isoformat(), "methods": methods}


def report_lines(fits: list[MethodFit]) -> list[str]:
    """A line per method: ECE before and after (held out), with the score kept."""
    lines = [f"Calibrated p(right): ECE with a 95% bootstrap interval, before (the raw numbers) and after (on "
             f"{FOLDS} held-out folds, never on the items a map was fitted on; agreement alone, or the logistic of "
             "agreement and confidence):"]
    width = max(len(fit.method) for fit in fits)
    for fit in fits:
        if fit.skipped:
            lines.append(f"  {fit.method:<{width}}  not calibrated: {fit.skipped}")
            continue
        after = ", ".join(f"{kind} {fit.after[kind].text()}{' (kept)' if kind == fit.score else ''}"
                          for kind in SCORES)
        lines.append(f"  {fit.method:<{width}}  before: confidence {fit.before['confidence'].text()}, agreement "
                     f"{fit.before['agreement'].text()}; after, held out: {after}; {fit.items} items")
    return lines
