"""Shared by the TUI tests: settle the app's workers, read what a screen says, isolate state."""

from __future__ import annotations

import os
from pathlib import Path

from textual.content import Content
from textual.widgets import OptionList, Static
from textual.worker import WorkerCancelled, WorkerFailed

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
RTX_4090 = ROOT / "tests" / "hardware" / "rtx4090.json"
CPU_ONLY = ROOT / "tests" / "hardware" / "cpu_only.json"


async def settle(pilot, rounds: int = 60) -> None:
    """Wait until no worker runs and none is started by the last one's result (scan -> preview)."""
    app = pilot.app
    quiet = 0
    for _ in range(rounds):
        for worker in list(app.workers):
            try:
                await worker.wait()
            except (WorkerCancelled, WorkerFailed):
                pass  # an exclusive worker replaced by a newer one; failures show on screen
        await pilot.pause(0.15)
        if any(not w.is_finished for w in app.workers):
            quiet = 0
            continue
        quiet += 1
        if quiet >= 3:
            return


def screen_text(app) -> str:
    """The plain text of every Static (labels, panels, bars) on the current screen."""
    parts = []
    for widget in app.screen.query("*"):
        if isinstance(widget, OptionList):
            parts += [str(Content.from_markup(o.prompt) if isinstance(o.prompt, str) else o.prompt) for o in widget.options]
        elif isinstance(widget, Static) or type(widget).__name__ in ("UsageBar", "StepBar"):
            try:
                parts.append(str(widget.render()))
            except Exception:
                pass
    return "\n".join(parts)


def isolate(monkeypatch, tmp_path: Path, hardware: Path = RTX_4090) -> Path:
    """Own state folder and fake hardware; run from `tmp_path` so session files land there."""
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LORA_TUI_HARDWARE", str(hardware))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


def cached_demo_available() -> bool:
    from engine.models import locate_config

    return locate_config(DEMO_MODEL) is not None


__all__ = ["settle", "screen_text", "isolate", "DEMO_DATA", "DEMO_MODEL", "RTX_4090", "CPU_ONLY", "os"]


def notices(app) -> list[str]:
    """The notifications on screen (Textual's toasts), as plain text; needs `run_test(notifications=True)`."""
    from textual.widgets._toast import Toast

    return [" ".join(str(toast.render()).split()) for toast in app.screen.query(Toast)]
