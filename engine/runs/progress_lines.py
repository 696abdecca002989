"""Events as the readable lines the headless replay prints, and its step counter."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Optional

from engine.runs.progress import duration

# Piped (a log file, `| tee`), the step counter is a plain line this often, not on every step.
PIPED_STEP_SECONDS = 30.0
BAR_CELLS = 20


def _num(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def format_event(event: dict, session=None) -> str | None:
    kind = event.get("event")
    if kind == "status":
        state = event.get("state")
        if state == "loading_model":
            return f"Loading {event.get('model')} ({event.get('backend')} backend) ..."
        if state == "preparing_data":
            return f"Preparing {event.get('dataset')} ..."
        if state == "merging":
            return "Merging the adapter into the base model (a fresh process) ..."
        if state == "evaluating":
            return "Evaluating: base against fine-tuned on the eval split (greedy, a fresh process) ..."
        if state == "exporting_gguf":
            return f"Exporting a {event.get('gguf_type')} GGUF with llama.cpp and checking it (a fresh process) ..."
        if state == "paused":
            return f"Paused at step {event.get('step')}."
        if state == "running":
            return f"Resumed at step {event.get('step')}."
        return None
    if kind == "data":
        stats = event.get("token_stats") or {}
        cut = event.get("truncated_rows", 0)
        return (
            f"Data: {event.get('format')} format, {event.get('train_rows')} train / {event.get('eval_rows')} eval rows"
            + (f", {event.get('skipped_rows')} skipped" if event.get("skipped_rows") else "")
            + (f"; tokens median {stats.get('median')}, p95 {stats.get('p95')}, max {stats.get('max')}" if stats else "")
            + (f"; {cut} rows cut at max_seq_length" if cut else "")
        )
    if kind == "start":
        resumed = f", resuming from {event['resume_from'].rsplit('/', 1)[-1]}" if event.get("resume_from") else ""
        return f"Training: {event.get('total_steps')} steps{resumed}."
    if kind == "log":
        return (
            f"step {event.get('step')}/{event.get('total_steps')} | loss {_num(event.get('loss'), '.4f')}"
            f" | lr {_num(event.get('learning_rate'), '.2e')} | {_num(event.get('tokens_per_second'), ',.0f')} tok/s"
            f" | ETA {duration(event.get('eta_seconds'))}"
        )
    if kind == "eval":
        return f"eval at step {event.get('step')}: eval_loss {_num(event.get('eval_loss'), '.4f')}"
    if kind == "checkpoint":
        return f"checkpoint saved: {event.get('path')}"
    if kind == "finding":
        lines = [f"! {event.get('kind')}: {event.get('message')}"]
        for number, remedy in enumerate(event.get("remedies") or [], start=1):
            lines.append(f"    {number}. {remedy.get('label')}")
        return "\n".join(lines)
    if kind in ("retry", "fallback"):
        return f"! {event.get('message')}"
    if kind == "end":
        if event.get("status") != "completed":
            return None
        where = event.get("adapter_dir") or event.get("model_dir")
        lines = [f"Done: {event.get('step')} steps in {duration(event.get('train_runtime'))}. Saved to {where}"]
        if event.get("adapter_dir"):
            lines.append(
                "Load it with: from peft import AutoPeftModelForCausalLM; "
                f"model = AutoPeftModelForCausalLM.from_pretrained({where!r})"
            )
        if event.get("merged_dir"):
            lines.append(f"Merged model: {event['merged_dir']}")
            if event.get("merged_note"):
                lines.append(event["merged_note"])
        if event.get("merge_error"):
            lines.append(f"The merge failed (the adapter is kept): {event['merge_error']}")
        if event.get("gguf_path"):
            if event.get("gguf_passed"):
                lines.append(f"GGUF (checked against the merged model): {event['gguf_path']}")
            else:
                lines.append(f"GGUF FAILED its check: {event['gguf_path']} ({event.get('gguf_reason')})")
        if event.get("gguf_error"):
            lines.append(f"The GGUF export failed (the adapter is kept): {event['gguf_error']}")
        return "\n".join(lines)
    if kind == "gguf":
        from engine.export.gguf_summary import summary_lines

        return "\n".join(summary_lines(event)) if "passed" in event else None
    if kind == "error":
        return f"Error: {event.get('message')}"
    return None


def step_line(progress) -> str:
    """"step 12/24 ▕██████░░░░▏ 50% | 1,204 tok/s | elapsed 1:02 | ETA 1:10" from a RunProgress."""

    total = progress.total_steps
    parts = [f"step {progress.step}/{total or '?'}"]
    if total:
        done = min(progress.step, total)
        filled = round(BAR_CELLS * done / total)
        parts[0] += f" ▕{'█' * filled}{'░' * (BAR_CELLS - filled)}▏ {100 * done // total}%"
    if progress.tokens_per_second:
        parts.append(f"{progress.tokens_per_second:,.0f} tok/s")
    parts.append(f"elapsed {duration(progress.elapsed)}")
    parts.append(f"ETA {duration(progress.eta_seconds)}")
    return " | ".join(parts)


class StepCounter:
    """The replay's progress, moved by every `step` event: in a terminal one line rewritten in place
    (tqdm-like); piped, a plain line every PIPED_STEP_SECONDS, so a log file stays readable."""

    def __init__(self, out: Callable[[str], None], interactive: Optional[bool] = None):
        self.out = out
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self._shown = False  # a rewritten line is on the terminal
        self._printed_at = 0.0

    def step(self, progress) -> None:
        text = step_line(progress)
        if self.interactive:
            self._write("\r\x1b[K" + text)
            self._shown = True
        elif time.monotonic() - self._printed_at >= PIPED_STEP_SECONDS:
            self._printed_at = time.monotonic()
            self.out(text)

    def line(self, text: str) -> None:
        """Any other line: printed above the step counter."""
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False
        self.out(text)

    def _write(self, text: str) -> None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError:  # the terminal went away (SSH dropped): training goes on without it
            self.interactive = False
