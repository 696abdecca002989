"""Headless replay: `lora-tui --replay SESSION.json [--dry-run] [--resume]`.

This process supervises; it never imports torch. It checks the session, starts the training
worker in its own process group, prints the worker's events as readable lines, forwards Ctrl+C
as a graceful stop, falls back from Unsloth to the peft backend (`backend: "auto"`), and retries
an out-of-memory failure with the cheapest remedy. The same code runs detached when the wizard
starts a run (its output then goes to the run folder's replay.log).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import UserError
from engine.paths import PROJECT_ROOT, atomic_write_text
from engine.runs.events import EVENTS_FILE, EventTail, EventWriter
from engine.runs.progress import RunProgress
from engine.runs.progress_lines import StepCounter, format_event
from engine.runs.registry import STOP_FILE, SUPERVISOR_PID_FILE, last_checkpoint, remember_run, request_stop
from engine.session.schema import Session, load_session, save_session
from engine.training.exit_codes import EXIT_STOPPED, WorkerExit
from engine.troubleshooting import oom


def replay(session_path: str, *, dry_run: bool = False, resume: bool = False, oom_retry: bool = True,
           out: Callable[[str], None] = print) -> int:
    session = load_session(session_path)
    if dry_run:
        from engine.training.preflight import preflight

        report = preflight(session)
        out(report.format())
        return 0 if report.ok else 2
    _check_dataset(session)
    run_dir = Path(session.output.dir)
    _check_run_dir(run_dir, resume, session_path)
    return Supervisor(session, run_dir, Path(session_path), out).run(resume=resume, oom_retry=oom_retry)


def _check_dataset(session: Session) -> None:
    """Refuse bad data before anything is written to the run folder."""
    from engine.data import scan_dataset

    d = session.dataset
    scan_dataset(d.path, format=d.format, columns=d.columns, skip_invalid_rows=d.skip_invalid_rows)


def _check_run_dir(run_dir: Path, resume: bool, session_path: str) -> None:
    trained = last_checkpoint(run_dir) is not None or (run_dir / "adapter").exists() or (run_dir / "model").exists()
    if resume and last_checkpoint(run_dir) is None:
        raise UserError(f"{run_dir}: no checkpoint to resume from; run `lora-tui --replay {session_path}` without --resume.")
    if trained and not resume:
        raise UserError(
            f"{run_dir} already holds a run; continue it with `lora-tui --replay {session_path} --resume`, "
            "or set output.dir to a new folder."
        )


class Supervisor:
    def __init__(self, session: Session, run_dir: Path, session_path: Path, out: Callable[[str], None]):
        self.session = session
        self.run_dir = run_dir
        self.session_path = session_path
        self._print = out
        self.worker: subprocess.Popen | None = None
        self.interrupts = 0
        self.progress = RunProgress()
        # In a terminal (the default print) the step counter rewrites one line; otherwise plain lines.
        self.counter = StepCounter(self._safe_print, interactive=out is print and sys.stdout.isatty())

    def out(self, line: str) -> None:
        """A line for the person, above the step counter."""
        self.counter.line(line)

    def _safe_print(self, line: str) -> None:
        try:
            self._print(line)
        except OSError:  # the terminal went away (SSH dropped): keep supervising without it
            pass

    # -- the whole run, with fallback and retries -------------------------------------------
    def run(self, *, resume: bool, oom_retry: bool) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_session(self.session, self.run_dir / "session.json")
        atomic_write_text(self.run_dir / SUPERVISOR_PID_FILE, f"{os.getpid()}\n")
        (self.run_dir / STOP_FILE).unlink(missing_ok=True)
        remember_run(self.run_dir)
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        # `kill` (SIGTERM) stops as gracefully as Ctrl+C; a closed terminal (SIGHUP) does not stop
        # training: the run keeps going and `lora-tui` re-attaches to it.
        signal.signal(signal.SIGTERM, self._on_interrupt)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        tail = EventTail(self.run_dir / EVENTS_FILE)
        list(tail.read_new())  # a resumed run's old events are history, not news
        backend = "unsloth" if self.session.backend in ("auto", "unsloth") else "peft"
        retries = 0
        try:
            while True:
                code, last = self._run_worker(backend, resume, tail)
                if code == WorkerExit.BACKEND_UNAVAILABLE and self.session.backend == "auto" and backend == "unsloth":
                    self._note("fallback", f"Unsloth cannot start here ({last.get('message', '')}); falling back to the peft backend.",
                               backend="peft")
                    backend = "peft"
                    continue
                if code == WorkerExit.OOM and oom_retry and retries < oom.MAX_RETRIES and not self.interrupts:
                    retry = self._apply_oom_remedy()
                    if retry is not None:
                        retries += 1
                        resume = retry == "resume" and last_checkpoint(self.run_dir) is not None
                        continue
                return self._finish(code, last)
        finally:
            signal.signal(signal.SIGINT, previous)
            (self.run_dir / SUPERVISOR_PID_FILE).unlink(missing_ok=True)

    def _apply_oom_remedy(self) -> str | None:
        from engine.troubleshooting.remedies import apply_remedy

        remedy = oom.cheapest_remedy(self.session)
        if remedy is None:
            return None
        self.session = apply_remedy(self.session, remedy)
        save_session(self.session, self.run_dir / "session.json")
        restart = remedy.get("restart", "fresh")
        self._note("retry", f"Out of memory: retrying with {remedy['label']} ({'resuming' if restart == 'resume' else 'restarting'}).",
                   remedy=remedy, reason="oom")
        return restart

    def _note(self, event: str, message: str, **fields) -> None:
        writer = EventWriter(self.run_dir)
        writer.emit(event, message=message, **fields)
        writer.close()

    # -- one worker process -------------------------------------------------------------------
    def _run_worker(self, backend: str, resume: bool, tail: EventTail) -> tuple[int, dict]:
        command = [sys.executable, "-m", "engine.training.worker", str(self.run_dir), "--backend", backend]
        if resume:
            command.append("--resume")
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        project_root = str(PROJECT_ROOT)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
        with open(self.run_dir / "worker.log", "ab") as log:
            self.worker = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C in the terminal reaches us, and we decide
                env=env,
            )
        last: dict = {}
        while True:
            code = self.worker.poll()
            for event in tail.read_new():
                last = event if event.get("event") in ("end", "error") else last
                self.progress.apply(event)
                if event.get("event") == "step":
                    self.counter.step(self.progress)
                    continue
                line = format_event(event, self.session)
                if line:
                    self.counter.line(line)
            if code is not None:
                return code, last
            time.sleep(0.25)

    def _on_interrupt(self, signum, frame) -> None:
        self.interrupts += 1
        if self.worker is None or self.worker.poll() is not None:
            raise KeyboardInterrupt
        if self.interrupts == 1:
            request_stop(self.run_dir)
            self.worker.send_signal(signal.SIGINT)
            self.out("Stopping after the current step and saving a checkpoint (Ctrl+C again to stop at once) ...")
        else:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.out("Stopped at once; the last saved checkpoint is kept.")

    def _finish(self, code: int, last: dict) -> int:
        resume_hint = f"lora-tui --replay {self.session_path} --resume"
        if last.get("event") == "end" and last.get("status") == "completed":
            return 0
        if last.get("event") == "end" and last.get("status") == "stopped":
            self.out(f"Stopped at step {last.get('step')}. Resume with: {resume_hint}")
            return EXIT_STOPPED
        if code != 0 and not last:
            checkpoint = last_checkpoint(self.run_dir)
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            where = f"; resume from {checkpoint.name} with: {resume_hint}" if checkpoint else ""
            message = f"The training worker ended unexpectedly ({how}){where}; see {self.run_dir / 'worker.log'}."
            self._note("error", message, kind="crash", checkpoint=str(checkpoint) if checkpoint else None)
            raise _RunFailed(message)
        message = last.get("message", f"the training worker exited with code {code}")
        if last.get("kind") == "oom":
            message += f"; see the finding in {self.run_dir / EVENTS_FILE} for remedies"
        raise _RunFailed(message, exit_code=2 if code == WorkerExit.BAD_INPUT else 1)


class _RunFailed(UserError):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
