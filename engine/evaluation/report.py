"""An evaluation result in words: the table `lora-tui eval` prints and the lines the finish screen shows."""

from __future__ import annotations

from typing import Any, Optional


def _pct(rate: Optional[float]) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def score_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, base, tuned) for the measures this evaluation has."""
    base, tuned = result["base"], result["tuned"]
    n = result["rows"]
    rows = [("exact match", f"{base['exact']}/{n} {_pct(base['exact_match'])}", f"{tuned['exact']}/{n} {_pct(tuned['exact_match'])}")]
    if base.get("json_rows"):
        rows.append(("valid JSON", _pct(base["valid_json"]), _pct(tuned["valid_json"])))
        rows.append(("field accuracy", _pct(base["field_accuracy"]), _pct(tuned["field_accuracy"])))
    if base.get("text_rows"):
        rows.append(("chrF (0-100)", f"{base['chrf']:.1f}", f"{tuned['chrf']:.1f}"))
    return rows


def headline(result: dict[str, Any]) -> str:
    """One line: exact match base -> tuned, and where it was measured."""
    if "error" in result:
        return f"Evaluation failed: {result['error']}"
    parts = [f"{measure} {b} → {t}" for measure, b, t in score_rows(result)]
    return f"Base → fine-tuned on {result['where']}: " + "; ".join(parts) + "."


def _short(text: str, width: int = 110) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_evaluation(result: dict[str, Any]) -> str:
    layout = "the model's chat template" if result.get("template") == "chat" else "the Alpaca layout"
    lines = [
        f"Evaluation on {result['where']}: greedy, up to {result['max_new_tokens']} new tokens, asked in {layout} "
        f"as in training ({result['seconds']:.0f} s).",
        "",
        f"  {'':16} {'base':>14} {'fine-tuned':>14}",
    ]
    for measure, base, tuned in score_rows(result):
        lines.append(f"  {measure:16} {base:>14} {tuned:>14}")
    examples = result.get("examples") or []
    if examples:
        lines += ["", "Examples:"]
        for example in examples:
            lines.append(f"  row {example['row'] + 1}: {_short(example['question'])}")
            lines.append(f"    reference   {_short(example['reference'])}")
            lines.append(f"    base        {_short(example['base'])}{'  ✓' if example['base_exact'] else ''}")
            lines.append(f"    fine-tuned  {_short(example['tuned'])}{'  ✓' if example['tuned_exact'] else ''}")
    if result.get("file"):
        lines += ["", f"Every row's answers: {result['file']}"]
    return "\n".join(lines)
