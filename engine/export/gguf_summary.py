"""A GGUF check in a few lines for a person: the export's report or the run's `gguf` event.

Standard library only: the replay's progress lines and the finish screen read it without loading
the export (engine.export.gguf).
"""

from __future__ import annotations


def summary_lines(report: dict) -> list[str]:
    """The report for a person, a few lines."""
    size = report["size_bytes"] / 2**20
    verdict = "checked" if report["passed"] else "FAILED the check"
    lines = [f"GGUF {report['type']}: {report['path']} ({size:,.0f} MiB), {verdict}."]
    if report.get("positions"):
        speed = f", {report['tokens_per_second']:.0f} tokens/s in llama.cpp" if report.get("tokens_per_second") else ""
        lines.append(f"Agreement with the merged model: {report['answers_identical']} of {report['answers']} answers "
                     f"token for token, {report['top1_agreement']:.1%} of {report['positions']} next tokens "
                     f"(teacher-forced){speed}.")
    if report.get("reason"):
        lines.append(f"Why it failed: {report['reason']}.")
    for prompt in (report.get("prompts") or report.get("examples") or [])[:1]:
        lines.append(f"  prompt: {_clip(prompt['shown'])}")
        lines.append(f"  merged (transformers): {_clip(prompt['merged'])}")
        lines.append(f"  GGUF (llama.cpp):      {_clip(prompt['gguf'] or '(no answer)')}")
    if report.get("modelfile"):
        lines.append(f"Ollama: {report['ollama_command']}")
    return lines


def _clip(text: str, limit: int = 110) -> str:
    text = " ".join(str(text).split()) or "(no text)"
    return text if len(text) <= limit else text[: limit - 1] + "…"
