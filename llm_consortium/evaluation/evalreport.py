"""What ``llm consortium eval`` reports, computed from per-item results.

Pure functions on lists in memory, and the text, JSON and plot made from
them; ``evaluate`` runs the models and fills the rows.

* accuracy, with a paired bootstrap 95 % interval of each row's difference
  from the best single member: the items are resampled with replacement
  (``BOOTSTRAP_SAMPLES`` times, a fixed seed), the same resample for every
  row, so the interval is of the paired difference on the same items;
* dollars and wall-clock seconds per item (unknown dollars stay unknown);
* calibration of a confidence signal: accuracy by confidence bin and the
  expected calibration error (ECE: the items' share in each bin times the
  gap between its accuracy and its mean confidence, summed);
* member diversity: the correlation of the members' errors, and the
  members that are never the only one right (they add nothing to the
  oracle);
* a one-line recommendation, or none where the data cannot tell the rows
  apart (every row scored 0, or every pair's 95 % intervals overlap).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ..core.ballots import percentile

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 20250101
#: Calibration bins: equal widths over [0, 1].
BINS = 5


@dataclass
class Problem:
    """An item a row has no answer of its own for."""

    item: int  # numbered from 1 in the dataset's order
    prompt: str  # its first words
    kind: str  # "failed" (scored as wrong) or "fallback" (the members' majority answered)
    reason: str


@dataclass
class Row:
    """A member, a baseline or a method: what it did on each item."""

    name: str
    kind: str  # "member", "self-moa", "oracle" or "method"
    correct: list[bool] = field(default_factory=list)
    cost: list[float | None] = field(default_factory=list)  # dollars per item; None: unknown
    seconds: list[float] = field(default_factory=list)  # wall-clock per item
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    rounds: list[int] = field(default_factory=list)  # methods: rounds per item
    confidence: list[float | None] = field(default_factory=list)  # methods: the final judgement's
    agreement: list[float | None] = field(default_factory=list)  # methods: measured agreement
    fields: list[float | None] = field(default_factory=list)  # structured items: the share of fields right
    # methods whose arbiter shares a family with a member: ``evalrun.self_preference``
    self_preference: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    # filled by ``compare``: the difference from the best member and its 95 % interval
    difference: float | None = None
    interval: tuple[float, float] | None = None
    accuracy_interval: tuple[float, float] | None = None

    @property
    def items(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / self.items if self.items else 0.0

    @property
    def cost_per_item(self) -> float | None:
        """Mean dollars per item; None when any item's cost is unknown."""
        if not self.cost or None in self.cost:
            return None
        return sum(self.cost) / len(self.cost)

    @property
    def seconds_per_item(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(p.kind == "failed" for p in self.problems)

    @property
    def fallback(self) -> int:
        return sum(p.kind == "fallback" for p in self.problems)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "items": self.items, "correct": sum(self.correct),
            "accuracy": round(self.accuracy, 4),
            "difference_from_best_member": None if self.difference is None else round(self.difference, 4),
            "interval_95": None if self.interval is None else [round(x, 4) for x in self.interval],
            "accuracy_interval_95": None if self.accuracy_interval is None
            else [round(x, 4) for x in self.accuracy_interval],
            "cost_usd_per_item": None if self.cost_per_item is None else round(self.cost_per_item, 8),
            "unpriced_items": self.cost.count(None),
            "seconds_per_item": round(self.seconds_per_item, 3),
            "calls": self.calls, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "mean_rounds": round(sum(self.rounds) / len(self.rounds), 3) if self.rounds else None,
            "failed": self.failed, "fallback": self.fallback,
            "problems": [vars(p) for p in self.problems],
            "correct_items": [int(c) for c in self.correct],
            "field_accuracy": None if self.field_accuracy is None else round(self.field_accuracy, 4),
            "self_preference": self.self_preference,
        }

    @property
    def field_accuracy(self) -> float | None:
        """The mean share of fields right over the structured items; None without any."""
        shares = [share for share in self.fields if share is not None]
        return sum(shares) / len(shares) if shares else None


def best_member(rows: list[Row]) -> Row:
    """The most accurate member (the first on a tie)."""
    return max((r for r in rows if r.kind == "member"), key=lambda r: r.accuracy)


def compare(rows: list[Row], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> Row:
    """Fill each row's difference from the best member with its paired
    bootstrap 95 % interval, and its accuracy's interval, from one set of
    resamples of the items. Returns the best member."""
    best = best_member(rows)
    n = best.items
    rng = random.Random(seed)
    resamples = [[rng.randrange(n) for _ in range(n)] for _ in range(samples)] if n else []
    for row in rows:
        row.difference = row.accuracy - best.accuracy
        accuracies = sorted(sum(row.correct[i] for i in idx) / n for idx in resamples)
        differences = sorted(sum(row.correct[i] - best.correct[i] for i in idx) / n for idx in resamples)
        row.accuracy_interval = (percentile(accuracies, 0.025), percentile(accuracies, 0.975))
        row.interval = (percentile(differences, 0.025), percentile(differences, 0.975))
    return best


@dataclass
class Bin:
    low: float
    high: float
    count: int = 0
    mean_confidence: float | None = None
    accuracy: float | None = None


@dataclass
class Calibration:
    bins: list[Bin]
    ece: float | None  # None when no item has the signal
    items: int  # items with the signal

    def to_dict(self) -> dict:
        return {"items": self.items, "ece": None if self.ece is None else round(self.ece, 4),
                "bins": [vars(b) for b in self.bins]}


def calibration(confidences: list[float | None], correct: list[bool], bins: int = BINS) -> Calibration:
    """Accuracy by confidence bin, and the expected calibration error, over
    the items whose confidence is known. Bins are [0, 1/bins), ...,
    [1 - 1/bins, 1]: a confidence of 1.0 falls in the last."""
    pairs = [(min(max(c, 0.0), 1.0), ok) for c, ok in zip(confidences, correct) if c is not None]
    grouped: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, ok in pairs:
        grouped[min(int(confidence * bins), bins - 1)].append((confidence, ok))
    result = []
    ece = 0.0
    for index, members in enumerate(grouped):
        b = Bin(round(index / bins, 4), round((index + 1) / bins, 4), len(members))
        if members:
            b.mean_confidence = sum(c for c, _ in members) / len(members)
            b.accuracy = sum(ok for _, ok in members) / len(members)
            ece += len(members) / len(pairs) * abs(b.accuracy - b.mean_confidence)
        result.append(b)
    return Calibration(result, ece if pairs else None, len(pairs))


def error_correlation(a: list[bool], b: list[bool]) -> float | None:
    """The correlation (phi) of two members' errors over the same items; None
    when either is always right or always wrong (no variance)."""
    n = len(a)
    wrong_a = [not x for x in a]
    wrong_b = [not x for x in b]
    mean_a, mean_b = sum(wrong_a) / n, sum(wrong_b) / n
    var_a, var_b = mean_a * (1 - mean_a), mean_b * (1 - mean_b)
    if n == 0 or var_a == 0 or var_b == 0:
        return None
    covariance = sum(x * y for x, y in zip(wrong_a, wrong_b)) / n - mean_a * mean_b
    return covariance / math.sqrt(var_a * var_b)


def redundant_members(members: list[Row]) -> list[str]:
    """Members that are never the only one right: without them the oracle is the same."""
    names = []
    for row in members:
        others = [r for r in members if r is not row]
        alone = any(ok and not any(o.correct[i] for o in others) for i, ok in enumerate(row.correct))
        if not alone:
            names.append(row.name)
    return names


def clearly_better(a: Row, b: Row) -> bool:
    """Whether ``a`` is clearly more accurate than ``b``: their accuracies'
    95 % intervals do not overlap."""
    return a.accuracy_interval[0] > b.accuracy_interval[1]


def data_can_tell(rows: list[Row], best: Row) -> bool:
    """Whether any row usable on its own (not the oracle, which knows the
    answers) is clearly more accurate than another: by their accuracies'
    intervals, or by the paired interval of its difference from the best
    member (a paired interval that leaves out 0). When none is, the data
    cannot tell the rows apart, and nothing is recommended."""
    usable = [r for r in rows if r.kind != "oracle"]
    paired = any(r is not best and (r.interval[0] > 0 or r.interval[1] < 0) for r in usable)
    return paired or any(clearly_better(a, b) for a in usable for b in usable if a is not b)


def recommendation(rows: list[Row], best: Row) -> str:
    """One line: which row to use, and why; or, where the data cannot tell
    (every row scored 0, or no row is clearly more accurate than another),
    that nothing is recommended, and why. ``compare`` has filled the
    intervals."""
    if all(r.accuracy == 0 for r in rows):
        return f"None: every row scored 0 on these {best.items} items, so the data cannot tell which to use."
    if not data_can_tell(rows, best):
        return (f"None: the data cannot tell which to use: no row is clearly more accurate than another on "
                f"these {best.items} items (their 95 % intervals overlap); more items may tell.")
    candidates = [r for r in rows if r.kind in ("method", "self-moa")]
    if not candidates:
        return f"Use {best.name} alone: no method was scored."
    top = max(candidates, key=lambda r: (r.accuracy, -(r.cost_per_item or 0)))
    low, high = top.interval
    if top.difference <= 0 or low <= 0:
        return (f"Use {best.name} alone: no method is clearly more accurate on this data (best: {top.name}, "
                f"{signed_points(top.difference)} points, 95 % interval {signed_points(low)} to "
                f"{signed_points(high)}).")
    price = money(top.cost_per_item)
    return (f"Use {top.name}: {signed_points(top.difference)} points over {best.name} alone (95 % interval "
            f"{signed_points(low)} to {signed_points(high)}), at {price} and {top.seconds_per_item:.1f} s per item.")


def signed_points(x: float) -> str:
    """A difference in accuracy as percentage points: +12.5, -3.0."""
    return f"{x * 100:+.1f}"


def money(amount: float | None) -> str:
    from ..core.pricing import dollars

    return "unknown cost" if amount is None else dollars(amount)


def table(rows: list[Row], best: Row) -> str:
    """The rows as a plain text table."""
    headers = ["row", "kind", "accuracy", f"points vs {best.name} [95% CI]", "$/item", "s/item", "calls", "failed",
               "fallback"]
    cells = []
    for r in rows:
        if r is best:
            versus = "(best)"
        else:
            versus = f"{signed_points(r.difference)} [{signed_points(r.interval[0])}, {signed_points(r.interval[1])}]"
        cost = "unknown" if r.cost_per_item is None else money(r.cost_per_item)
        cells.append([r.name, r.kind, f"{r.accuracy:.3f}", versus, cost, f"{r.seconds_per_item:.2f}",
                      f"{r.calls:,}", str(r.failed), str(r.fallback)])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    left = {0, 1}

    def line(values):
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers)] + [line(c) for c in cells]).rstrip()


def calibration_lines(rows: list[Row]) -> list[str]:
    """A line per method and signal: ECE, then accuracy per bin (n items)."""
    lines = ["Calibration: accuracy by confidence bin (items in it); ECE, expected calibration error, lower is "
             "better:"]
    width = max(len(r.name) for r in rows)
    for r in rows:
        if r.kind != "method":
            continue
        for signal, values in (("confidence", r.confidence), ("agreement", r.agreement)):
            c = calibration(values, r.correct)
            if c.ece is None:
                lines.append(f"  {r.name:<{width}}  {signal:<10}  not measured")
                continue
            bins = "  ".join(
                f"{b.low:.1f}-{b.high:.1f}: {b.accuracy:.2f} ({b.count})" for b in c.bins if b.count
            )
            lines.append(f"  {r.name:<{width}}  {signal:<10}  ECE {c.ece:.3f}  {bins}")
    return lines


def diversity_lines(members: list[Row]) -> list[str]:
    """The members' pairwise error correlations and the ones adding nothing."""
    if len(members) < 2:
        return []
    lines = ["Member diversity: correlation of errors (1: wrong on the same items, 0: unrelated):"]
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            rho = error_correlation(a.correct, b.correct)
            lines.append(f"  {a.name} ~ {b.name}: " + ("-" if rho is None else f"{rho:+.2f}"))
    redundant = redundant_members(members)
    if redundant:
        lines.append(f"  Adds nothing (never the only member right): {', '.join(redundant)}")
    else:
        lines.append("  Every member is the only one right on some item.")
    return lines


def field_lines(rows: list[Row]) -> list[str]:
    """For structured items: the share of the expected fields each row got right."""
    scored = [r for r in rows if r.field_accuracy is not None]
    if not scored:
        return []
    width = max(len(r.name) for r in scored)
    count = sum(share is not None for share in scored[0].fields)
    lines = [f"Structured items ({count}), scored per field: the share of the expected fields right:"]
    lines += [f"  {r.name:<{width}}  {r.field_accuracy * 100:.0f} %" for r in scored]
    return lines


def self_preference_lines(rows: list[Row]) -> list[str]:
    """A line per method whose arbiter shares a family with a member: how
    often it chose its family's answer, against how often that was right."""
    lines = []
    for r in rows:
        found = r.self_preference
        if not found:
            continue
        who = f"{r.name}, arbiter {found['arbiter']} (family of {', '.join(found['family'])})"
        if not found["items"]:
            lines.append(f"  {who}: no item where its family's answer differed from another member's")
            continue
        lines.append(f"  {who}: on {found['items']} items where its family's answer differed, chose it on "
                     f"{found['chose_family']} ({found['choice_rate'] * 100:.0f} %); it was right on "
                     f"{found['family_right']} ({found['right_rate'] * 100:.0f} %): "
                     f"gap {signed_points(found['gap'])} points")
    return ["Self-preference: the arbiter's choice of its own family's answer, against that answer's accuracy "
            "(a gap above 0 favours the family):"] + lines if lines else []


def report(rows: list[Row]) -> tuple[str, Row]:
    """The whole text report, and the best member."""
    best = compare(rows)
    members = [r for r in rows if r.kind == "member"]
    parts = [table(rows, best), "\n".join(calibration_lines(rows))]
    diversity = diversity_lines(members)
    if diversity:
        parts.append("\n".join(diversity))
    for lines in (field_lines(rows), self_preference_lines(rows)):
        if lines:
            parts.append("\n".join(lines))
    parts.append("Recommendation: " + recommendation(rows, best))
    return "\n\n".join(parts), best


def summary_dict(rows: list[Row], best: Row) -> dict:
    """Calibration, diversity and the recommendation, for ``--json``."""
    members = [r for r in rows if r.kind == "member"]
    return {
        "best_member": best.name,
        "calibration": {
            r.name: {"confidence": calibration(r.confidence, r.correct).to_dict(),
                     "agreement": calibration(r.agreement, r.correct).to_dict()}
            for r in rows if r.kind == "method"
        },
        "error_correlation": [
            {"a": a.name, "b": b.name, "correlation": error_correlation(a.correct, b.correct)}
            for i, a in enumerate(members) for b in members[i + 1:]
        ],
        "adds_nothing": redundant_members(members),
        "recommendation": recommendation(rows, best),
    }


def problem_list(rows: list[Row]) -> str:
    """Which items each row failed or fell back on, and why: a line per row and reason."""
    lines = ["Failed (scored as wrong) or fell back to the members' majority (scored as its answer), "
             "items numbered from 1:"]
    for r in rows:
        by_reason: dict[tuple[str, str], list[int]] = {}
        for p in r.problems:
            by_reason.setdefault((p.kind, p.reason), []).append(p.item)
        for (kind, reason), numbers in by_reason.items():
            verb = "failed" if kind == "failed" else "fell back"
            lines.append(f"  {r.name} {verb} on {item_numbers(numbers)}: {reason}")
    return "\n".join(lines)


def item_numbers(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "items 1-3, 7"; [4] -> "item 4"."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"item {text}" if len(numbers) == 1 else f"items {text}"



def save_plot(rows: list[Row], path) -> None:
    """Accuracy (with its 95 % interval) against dollars per item, or tokens
    per item when any row's cost is unknown; one labelled point per row, a
    label moved down when it would sit on one already placed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    priced = all(r.cost_per_item is not None for r in rows)
    figure, axes = plt.subplots(figsize=(8, 5))
    styles = {"member": ("o", "tab:blue"), "self-moa": ("D", "tab:orange"), "oracle": ("*", "tab:gray"),
              "method": ("s", "tab:green")}
    placed: list[tuple[float, float]] = []
    for r in rows:
        x = r.cost_per_item if priced else (r.input_tokens + r.output_tokens) / max(r.items, 1)
        x = max(x, 1e-9)  # a log axis: a free row sits at the far left
        low, high = r.accuracy_interval or (r.accuracy, r.accuracy)
        marker, colour = styles[r.kind]
        axes.errorbar(x, r.accuracy, yerr=[[r.accuracy - low], [high - r.accuracy]], fmt=marker, color=colour,
                      ecolor=colour, elinewidth=1, capsize=3, markersize=9 if r.kind == "oracle" else 6)
        near = sum(abs(math.log10(x) - px) < 0.3 and abs(r.accuracy - py) < 0.04 for px, py in placed)
        placed.append((math.log10(x), r.accuracy))
        axes.annotate(r.name, (x, r.accuracy), textcoords="offset points", xytext=(7, 3 - 11 * near), fontsize=8)
    for kind, (marker, colour) in styles.items():
        axes.plot([], [], marker, color=colour, label=kind)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_xscale("log")
    if priced:
        from ..core.pricing import dollars

        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: dollars(value)))
    axes.set_xlabel("dollars per item (log scale)" if priced else "tokens per item (log scale; some costs unknown)")
    axes.set_ylabel("accuracy (95% bootstrap interval)")
    axes.set_title(f"Accuracy against cost, {rows[0].items} items", fontsize=10)
    axes.set_ylim(0, 1.05)
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
