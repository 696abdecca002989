"""Headless replay: `lora-tui --replay SESSION.json [--dry-run] [--resume]`.

This process supervises; it never imports torch. It checks the session, starts the training
worker in its own process group, prints the worker's events as readable lines, forwards Ctrl+C
as a graceful stop, falls back from Unsloth to the peft backend (`backend: "auto"`), and retries
an out-of-memory failure with the cheapest remedy. The same code runs detached when the wizard
starts a run (its output then goes to the run folder's replay.log).

With several processes (the session's `distributed` section) it starts the same worker under
torchrun (engine.training.distributed): on one node with --standalone; with several nodes each node
runs `lora-tui --replay S --node-rank I`, node 0 being the leader where events, checkpoints and the
adapter are written. torchrun's exit code says little (any failure becomes 1), so the outcome comes
from rank 0's events and the ranks' reports (ranks/rank-R.json), and a failed or killed rank is
named in an `error` event with its `rank`.
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
from engine.training import distributed
from engine.training.args import tracker_environment
from engine.training.exit_codes import EXIT_STOPPED, WorkerExit
from engine.troubleshooting import oom


def replay(session_path: str, *, dry_run: bool = False, resume: bool = False, oom_retry: bool = True,
           out: Callable[[str], None] = print, node_rank: int | None = None) -> int:
    session = load_session(session_path)
    launch = distributed.resolve_launch(session, node_rank)  # a bad --node-rank is one sentence, before anything
    if dry_run:
        from engine.training.preflight import preflight

        report = preflight(session)
        out(report.format())
        return 0 if report.ok else 2
    _check_dataset(session)
    from engine.training.preflight import check_trackers

    check_trackers(session)  # a tracker that is not installed: one sentence, before anything runs
    on_gpu = distributed.visible_gpus() > 0
    distributed.check_strategy(session, launch, distributed.first_backend(session, launch, on_gpu), on_gpu=on_gpu)
    run_dir = Path(session.output.dir)
    _check_run_dir(run_dir, resume, session_path)
    return Supervisor(session, run_dir, Path(session_path), out, launch=launch).run(resume=resume, oom_retry=oom_retry)


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
    def __init__(self, session: Session, run_dir: Path, session_path: Path, out: Callable[[str], None],
                 launch: distributed.Launch | None = None):
        self.session = session
        self.launch = launch or distributed.resolve_launch(session)
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
        if self.launch.leader:  # a follower node's pid would mislead `lora-tui runs` on a shared folder
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
        backend = distributed.first_backend(self.session, self.launch, distributed.visible_gpus() > 0)
        retries = 0
        if self.launch.distributed:
            self.out(f"Training with {distributed.describe(self.launch)} through torchrun"
                     + (f"; this is node {self.launch.node_rank}" if self.launch.nnodes > 1 else "") + ".")
        if self.launch.nnodes > 1:
            oom_retry = False  # the other nodes' supervisors could not follow a changed session
        try:
            while True:
                self._check_strategy(backend)
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
            if self.launch.leader:
                (self.run_dir / SUPERVISOR_PID_FILE).unlink(missing_ok=True)

    def _check_strategy(self, backend: str) -> None:
        try:
            distributed.check_strategy(self.session, self.launch, backend, on_gpu=distributed.visible_gpus() > 0)
        except UserError as error:  # after a fallback to peft: said in the events too
            self._note("error", str(error), kind="input")
            raise _RunFailed(str(error), exit_code=2) from None

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

    def _note(self, event: str, message: str, **fields) -> dict:
        if not self.launch.leader:  # the events are node 0's; a follower says it here only
            self.out(message)
            return {"event": event, "message": message, **fields}
        writer = EventWriter(self.run_dir)
        record = writer.emit(event, message=message, **fields)
        writer.close()
        return record

    # -- one worker process -------------------------------------------------------------------
    def worker_command(self, backend: str, resume: bool) -> tuple[list[str], dict[str, str], str]:
        """The command that starts the worker (under torchrun for several processes), its
        environment, and the log file (in the run folder) its output goes to."""
        worker_args = [str(self.run_dir), "--backend", backend]
        if resume:
            worker_args.append("--resume")
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        for name, value in tracker_environment(self.session, self.run_dir).items():
            env.setdefault(name, value)  # TensorBoard's files in the run folder, unless the person set a folder
        project_root = str(PROJECT_ROOT)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
        if not self.launch.distributed:
            return [sys.executable, "-m", "engine.training.worker", *worker_args], env, "worker.log"
        worker_args += ["--strategy", self.launch.strategy]
        if self.launch.strategy == "fsdp" and backend == "unsloth":
            env["UNSLOTH_FSDP2"] = "1"  # Unsloth shards the model itself (4-bit weights included)
            if self.session.distributed.cpu_offload:
                env["UNSLOTH_FSDP2_CPU_OFFLOAD"] = "1"  # Unsloth's own switch: CPUOffloadPolicy on its fully_shard
        log_name = "worker.log" if self.launch.leader else f"worker-node-{self.launch.node_rank}.log"
        return distributed.torchrun_command(self.launch, worker_args), env, log_name

    def _run_worker(self, backend: str, resume: bool, tail: EventTail) -> tuple[int, dict]:
        command, env, log_name = self.worker_command(backend, resume)
        if self.launch.distributed:
            distributed.clear_rank_reports(self.run_dir, self._my_ranks())
        with open(self.run_dir / log_name, "ab") as log:
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
                if self.launch.distributed:
                    return self._outcome_of_ranks(code, last)
                return code, last
            time.sleep(0.25)

    def _my_ranks(self) -> range:
        first = self.launch.node_rank * self.launch.nproc_per_node
        return range(first, first + self.launch.nproc_per_node)

    def _outcome_of_ranks(self, code: int, last: dict) -> tuple[int, dict]:
        """torchrun's exit code is 0 or 1: what happened comes from rank 0's last event and the ranks'
        reports. A failure on a rank other than 0, or a rank that vanished, becomes an error event
        naming the rank (the first cause, not the echoes on the ranks that lost their peer)."""
        if last.get("event") == "end":
            return WorkerExit.OK, last
        reports = distributed.read_rank_reports(self.run_dir)
        if not self.launch.leader and last.get("event") != "error":
            reports = [r for r in reports if r["rank"] in self._my_ranks()]
        cause = distributed.root_cause(reports)
        if cause is None:
            return code, last
        kind = cause.get("kind")
        exit_code = {"oom": WorkerExit.OOM, "input": WorkerExit.BAD_INPUT,
                     "backend_unavailable": WorkerExit.BACKEND_UNAVAILABLE}.get(kind, WorkerExit.FAILED)
        if cause["rank"] == 0 and last.get("event") == "error":
            return exit_code, last  # rank 0 said it in the events already
        message = cause["message"]
        if kind in ("killed", "crash"):
            checkpoint = last_checkpoint(self.run_dir)
            where = f"; resume from {checkpoint.name} with: {self._resume_hint()}" if checkpoint else ""
            log = "worker.log" if cause["rank"] == 0 else f"worker-rank-{cause['rank']}.log"
            see = f"; see {self.run_dir / log}" if kind == "killed" else ""  # a crash names its log already
            message = f"{message}{where}{see}."
        if kind == "oom":
            found = oom.finding(self.session, cause.get("step"), cause.get("message", ""))
            self._note("finding", found["message"], **{k: v for k, v in found.items() if k not in ("event", "time", "message")},
                       rank=cause["rank"])
        event = self._note("error", message, kind=kind, rank=cause["rank"], step=cause.get("step"))
        return exit_code, event

    def _resume_hint(self) -> str:
        hint = f"lora-tui --replay {self.session_path} --resume"
        if self.launch.nnodes > 1:
            return f"{hint} --node-rank I on each node I"
        return hint

    def _on_interrupt(self, signum, frame) -> None:
        self.interrupts += 1
        if self.worker is None or self.worker.poll() is not None:
            raise KeyboardInterrupt
        if self.interrupts == 1:
            request_stop(self.run_dir)
            if not self.launch.distributed:
                # torchrun would answer a signal by ending its workers at once; under it the STOP file
                # alone stops every rank (they agree on it after each step).
                self.worker.send_signal(signal.SIGINT)
            self.out("Stopping after the current step and saving a checkpoint (Ctrl+C again to stop at once) ...")
        else:
            if self.launch.distributed:  # torchrun starts each worker in its own session
                for report in distributed.read_rank_reports(self.run_dir):
                    if report["rank"] in self._my_ranks() and report.get("outcome") == "running":
                        _kill(report.get("pid"))
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.out("Stopped at once; the last saved checkpoint is kept.")

    def _finish(self, code: int, last: dict) -> int:
        resume_hint = self._resume_hint()
        if last.get("event") == "end" and last.get("status") == "completed":
            if self.launch.leader:  # node 0 saved the adapter; the command runs once, there
                self._run_on_finish(last)
            return 0
        if not self.launch.leader and code == 0 and not last:
            self.out(f"Node {self.launch.node_rank}: its {self.launch.nproc_per_node} process(es) finished; the run's events, "
                     "checkpoints and adapter are written on node 0.")
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


    # -- output.on_finish ------------------------------------------------------------------------
    def _run_on_finish(self, end: dict) -> None:
        """The session's `output.on_finish` shell command, once, after a completed run whose adapter (or
        model) is saved and checked; its output goes to the run's worker.log, its exit code to an
        `on_finish` event. Never after a failed or stopped run (`_finish` calls it only on success)."""
        command = self.session.output.on_finish
        if not command:
            return
        problem = saved_output_problem(end)
        if problem:
            self._note("on_finish", f"output.on_finish was not run: {problem}.", command=command, exit_code=None)
            self.out(f"output.on_finish was not run: {problem}.")
            return
        log_path = self.run_dir / "worker.log"
        self.out(f"Running output.on_finish: {command}")
        with open(log_path, "ab") as log:
            log.write(f"\n--- output.on_finish: {command}\n".encode())
            log.flush()
            try:
                code = subprocess.run(command, shell=True, cwd=self.session_path.parent.absolute(), stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, LORA_TUI_RUN_DIR=str(self.run_dir.absolute()))).returncode
            except OSError as error:
                code = None
                log.write(f"cannot run it: {error}\n".encode())
            log.write(f"--- output.on_finish exited with code {code}\n".encode())
        word = "finished" if code == 0 else f"exited with code {code}"
        self._note("on_finish", f"output.on_finish {word}; its output is in {log_path}.", command=command, exit_code=code)
        self.out(f"output.on_finish {word}; its output is in {log_path}.")


def saved_output_problem(end: dict) -> str:
    """Why the end event's adapter (or full model) is not a usable saved folder; "" when it is."""
    folder = end.get("adapter_dir") or end.get("model_dir")
    if not folder:
        return "the run's end names no saved adapter or model"
    path = Path(folder)
    config = "adapter_config.json" if end.get("adapter_dir") else "config.json"
    if not (path / config).is_file():
        return f"{path / config} is missing"
    weights = [p for p in path.glob("*.safetensors") if p.stat().st_size > 0] + [p for p in path.glob("*.bin") if p.stat().st_size > 0]
    if not weights:
        return f"{path} holds no weights"
    return ""


def _kill(pid) -> None:
    try:
        os.kill(int(pid), signal.SIGKILL)
    except (TypeError, ValueError, OSError):
        pass


class _RunFailed(UserError):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
