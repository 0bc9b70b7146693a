"""What the terminal shows on stderr. stdout carries only the answer."""

from __future__ import annotations

import click


def _rule(title: str) -> str:
    return click.style(f"── {title} " + "─" * max(0, 60 - len(title)), dim=True)


def _member_line(member: dict) -> str:
    tokens = member["tokens"]["input"] + member["tokens"]["output"]
    status = click.style("failed", fg="red") if member.get("error") else "ok"
    return click.style(
        f"[{member['model']} #{member['instance']}] {status}, {member['seconds']:.1f} s, {tokens} tokens", bold=True
    )


def raw_responses(result: dict) -> str:
    """Every round: each member's raw answer (or error), then the arbiter's raw reply."""
    lines = []
    for iteration in result["iterations"]:
        lines.append(_rule(f"Round {iteration['round']}"))
        for member in iteration["model_responses"]:
            lines.append(_member_line(member))
            lines.append(member["error"] if member.get("error") else member["text"].strip())
            lines.append("")
        if iteration["arbiter"].get("raw"):
            lines.append(click.style(f"[arbiter {result['metadata']['arbiter']}]", bold=True))
            lines.append(iteration["arbiter"]["raw"].strip())
            lines.append("")
    return "\n".join(lines)


def summary(result: dict) -> str:
    """Confidence, analysis, dissent and the round count, laid out for reading."""
    synthesis, meta = result["synthesis"], result["metadata"]
    rounds = meta["iteration_count"]
    failed = sum(1 for m in result["model_responses"] if m.get("error"))
    parts = [
        f"Confidence {synthesis['confidence']:.2f}",
        f"{rounds} round{'s' if rounds != 1 else ''}",
        f"{meta['usage']['total']:,} tokens",
        f"{meta['seconds']:.1f} s",
    ]
    if failed:
        parts.append(click.style(f"{failed} member{'s' if failed != 1 else ''} failed", fg="red"))
    lines = [_rule("Consortium"), " · ".join(parts)]
    if not synthesis.get("parse_ok", True):
        lines.append(click.style("The arbiter's reply could not be parsed; its raw text is the answer.", fg="yellow"))
    for title in ("analysis", "dissent"):
        text = (synthesis.get(title) or "").strip()
        if text and text.lower() not in ("none", "none.", "n/a"):
            lines.append(click.style(title.capitalize() + ":", bold=True) + " " + text)
    lines.append(click.style(f"Run {meta['run_id']}  (llm consortium inspect {meta['run_id'][:8]})", dim=True))
    return "\n".join(lines)
