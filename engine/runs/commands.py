"""`lora-tui runs` and `lora-tui stop RUN_DIR`: run folders from a shell, no terminal UI needed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.errors import UserError
from engine.runs.events import EVENTS_FILE
from engine.runs.registry import PAUSE_FILE, known_runs, request_resume, request_stop, run_state


def run_folder(path: str) -> Path:
    run_dir = Path(path).expanduser()
    if not (run_dir / EVENTS_FILE).is_file():
        raise UserError(f"{run_dir}: not a run folder (it has no {EVENTS_FILE}); `lora-tui runs` lists the known ones.")
    return run_dir.resolve()


def age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now" if seconds < 5 else f"{seconds:.0f} s ago"


def runs_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lora-tui runs", description="Known runs, newest first, with their state.")
    parser.add_argument("--limit", type=int, default=20, help="how many to list (default 20)")
    args = parser.parse_args(argv)
    folders = [p for p in reversed(known_runs()) if (p / EVENTS_FILE).is_file()][: max(args.limit, 1)]
    if not folders:
        print("No runs yet: start one with `lora-tui` or `lora-tui --replay SESSION.json`.")
        return 0
    now = time.time()
    rows = []
    for folder in folders:
        state = run_state(folder)
        step = f"{state.step} / {state.total_steps or '?'}"
        moved = now - state.last_event_at if state.last_event_at else None
        rows.append((state.status, step, age(moved), str(folder)))
    widths = [max(len(row[i]) for row in rows + [("state", "step", "last event", "")]) for i in range(3)]
    print(f"{'state':<{widths[0]}}  {'step':>{widths[1]}}  {'last event':<{widths[2]}}  run folder")
    for status, step, moved, folder in rows:
        print(f"{status:<{widths[0]}}  {step:>{widths[1]}}  {moved:<{widths[2]}}  {folder}")
    print("\nWatch one with `lora-tui attach RUN_DIR`; stop one with `lora-tui stop RUN_DIR`.")
    return 0


def stop_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lora-tui stop", description="Ask a run to stop after its current step; a checkpoint is kept."
    )
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    run_dir = run_folder(args.run_dir)
    state = run_state(run_dir)
    if state.status not in ("running", "paused"):
        print(f"{run_dir} is not running ({state.status} at step {state.step}); nothing to stop.")
        return 0
    request_stop(run_dir)
    if (run_dir / PAUSE_FILE).exists():
        request_resume(run_dir)  # a paused worker must take one more step to checkpoint and end
    print(f"Asked {run_dir} to stop after step {state.step + 1}; it saves a checkpoint, then ends. "
          f"Resume later with: lora-tui --replay {run_dir / 'session.json'} --resume")
    return 0
