"""Run folders: start a run in the background, ask it to stop or pause, and read its state.

A run is supervised by a detached `lora-tui --replay` process (its own session, so it outlives
the terminal or the SSH connection) that starts the worker, falls back to the peft backend and
retries out-of-memory errors. Front ends only write request files and read events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.paths import atomic_write_text, state_dir
from engine.runs.events import read_events
from engine.runs.progress import progress_of
from engine.session.schema import Session, save_session

STOP_FILE = "STOP"
PAUSE_FILE = "PAUSE"
SUPERVISOR_PID_FILE = "supervisor.pid"


@dataclass(frozen=True)
class RunHandle:
    run_dir: Path
    pid: int


@dataclass(frozen=True)
class RunState:
    run_dir: Path
    status: str  # "running" | "paused" | "completed" | "stopped" | "failed" | "interrupted" | "new"
    step: int
    total_steps: Optional[int]
    pid: Optional[int]
    last_checkpoint: Optional[Path]
    message: str = ""
    last_event_at: Optional[float] = None  # wall time of its latest event: how long ago it moved

    @property
    def resumable(self) -> bool:
        return self.status in ("stopped", "failed", "interrupted") and self.last_checkpoint is not None


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return True


def launch(session: Session, *, resume: bool = False, extra_args: tuple[str, ...] = ()) -> RunHandle:
    """Start a run detached from this process; returns at once."""
    run_dir = Path(session.output.dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    session_path = save_session(session, run_dir / "session.json")
    for request in (STOP_FILE, PAUSE_FILE):
        (run_dir / request).unlink(missing_ok=True)
    log = open(run_dir / "replay.log", "ab")
    command = [sys.executable, "-m", "tui.cli", "--replay", str(session_path)]
    if resume:
        command.append("--resume")
    command.extend(extra_args)
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: closing the terminal does not stop training
        cwd=str(run_dir),
    )
    log.close()
    remember_run(run_dir)
    return RunHandle(run_dir, process.pid)


def request_stop(run_dir: str | Path) -> None:
    """Graceful stop: the worker saves a checkpoint after the current step, then ends."""
    Path(run_dir, STOP_FILE).touch()


def request_pause(run_dir: str | Path) -> None:
    Path(run_dir, PAUSE_FILE).touch()


def request_resume(run_dir: str | Path) -> None:
    Path(run_dir, PAUSE_FILE).unlink(missing_ok=True)


def last_checkpoint(run_dir: str | Path) -> Optional[Path]:
    best = None
    for path in Path(run_dir).glob("checkpoint-*"):
        suffix = path.name.rpartition("-")[2]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            if best is None or int(suffix) > int(best.name.rpartition("-")[2]):
                best = path
    return best


def run_state(run_dir: str | Path) -> RunState:
    """What a run folder says about its run, from its events and whether its processes live."""
    run_dir = Path(run_dir)
    progress = progress_of(read_events(run_dir))
    status = {"waiting": "new", "starting": "running", "retrying": "running"}.get(progress.status_word, progress.status_word)
    supervisor = _read_pid(run_dir / SUPERVISOR_PID_FILE)
    alive = pid_alive(progress.pid) or pid_alive(supervisor)
    if status in ("running", "paused") and not alive:
        status = "interrupted"
    elif status in ("failed", "new") and pid_alive(supervisor):
        status = "running"  # the supervisor is retrying or falling back
    return RunState(run_dir, status, progress.step, progress.total_steps, progress.pid or supervisor,
                    last_checkpoint(run_dir), progress.error_message, progress.last_event_at)


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _registry() -> Path:
    return state_dir() / "runs.json"


def remember_run(run_dir: Path) -> None:
    """Keep a list of run folders so `lora-tui` can offer to re-attach or resume on start."""
    known = [str(p) for p in known_runs() if p != Path(run_dir)]
    known.append(str(Path(run_dir)))
    atomic_write_text(_registry(), json.dumps(known[-50:], indent=1) + "\n")


def known_runs() -> list[Path]:
    try:
        return [Path(p) for p in json.loads(_registry().read_text())]
    except (OSError, ValueError):
        return []


def list_runs(include_finished: bool = False) -> list[RunState]:
    """Known runs, newest first: by default those still going or that can be resumed."""
    states = []
    for run_dir in reversed(known_runs()):
        if not (run_dir / "events.jsonl").exists():
            continue
        state = run_state(run_dir)
        if include_finished or state.status in ("running", "paused", "interrupted", "stopped", "failed"):
            states.append(state)
    return states
