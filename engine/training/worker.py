"""The training process: `python -m engine.training.worker RUN_DIR --backend unsloth|peft [--resume]
[--strategy none|ddp|fsdp]`.

Runs in its own process (and process group), never in the UI: Unsloth must be imported first
and patches the whole process; a crash or an out-of-memory error must not take the UI down. It
reads RUN_DIR/session.json, trains, and writes events.jsonl; its own stdout and stderr (library
banners, warnings, tracebacks) go to RUN_DIR/worker.log, kept out of the person's terminal.

Exit codes are `WorkerExit` (engine.training.exit_codes); the error event carries the one-line message.

Under torchrun (several processes; engine.training.distributed) every rank runs this: global rank
0 writes events.jsonl and worker.log as above, every other rank writes nothing but its own log
(worker-rank-R.log) and its report (ranks/rank-R.json: started, then ok or its error). Exit codes
do not survive torchrun (it turns them into 1), so the supervisor reads the events and the reports.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from engine.runs.registry import STOP_FILE
from engine.training.exit_codes import WorkerExit


class Terminated(BaseException):
    """SIGTERM under torchrun: it ends the remaining workers that way once one has failed (or when it
    is itself stopped), so there is no peer left to agree on a graceful stop with."""


class StopFlag:
    """Set by SIGINT / SIGTERM or a STOP file; checked by the training callback after each step."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.signalled = False

    def install(self, under_torchrun: bool = False) -> None:
        def handler(signum, frame):
            self.signalled = True

        def terminate(signum, frame):
            self.signalled = True
            signal.signal(signal.SIGTERM, handler)  # once is enough
            raise Terminated()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, terminate if under_torchrun else handler)

    @property
    def requested(self) -> bool:
        return self.signalled or (self.run_dir / STOP_FILE).exists()


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m engine.training.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--backend", choices=["unsloth", "peft"], required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--strategy", choices=["none", "ddp", "fsdp"], default="none",
                        help="how several processes (torchrun) share the work")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    run_dir = Path(args.run_dir).resolve()
    # Keep Unsloth's compile cache out of the person's working directory.
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(run_dir / ".unsloth_compiled_cache"))
    from engine.runs.events import EventWriter
    from engine.training.distributed import NullEventWriter, Rank, write_rank_report

    rank = Rank.from_environment()
    if rank.distributed:
        if not rank.main:
            _own_log(run_dir / f"worker-rank-{rank.rank}.log")
        write_rank_report(run_dir, rank, outcome="running", strategy=args.strategy)
    events = EventWriter(run_dir) if rank.main else NullEventWriter()
    stop = StopFlag(run_dir)
    stop.install(under_torchrun=rank.distributed)
    outcome: dict = {"outcome": "error", "kind": "crash", "message": "ended before reporting"}

    def fail(kind: str, message: str, **fields) -> None:
        outcome.update(outcome="error", kind=kind, message=message)
        if rank.distributed:
            if kind == "crash":
                # Often the echo of another rank's failure ("Connection reset by peer"): the supervisor
                # reads every rank's report and writes the error of the rank that failed first.
                return
            fields["rank"] = rank.rank
        events.emit("error", kind=kind, message=message, **fields)

    try:
        _use_own_device(rank)
        try:
            backend = _import_backend(args.backend)
        except Exception as exc:  # any import failure means "this backend cannot start here"
            traceback.print_exc()
            fail("backend_unavailable", f"The {args.backend} backend cannot start here: {_one_line(exc)}", backend=args.backend)
            return WorkerExit.BACKEND_UNAVAILABLE

        from engine.errors import UserError

        run = None
        try:
            from engine.training.run import TrainingRun

            run = TrainingRun(run_dir, backend, events, stop, resume=args.resume, rank=rank, strategy=args.strategy)
            run.run()
            outcome.update(outcome="ok", kind=None, message=None, **run.rank_facts)
            return WorkerExit.OK
        except Terminated:
            raise
        except UserError as exc:
            fail("input", str(exc))
            return WorkerExit.BAD_INPUT
        except BaseException as exc:  # the worker reports every failure as an event
            from engine.troubleshooting import oom

            if oom.is_oom(exc):
                traceback.print_exc()
                step = run.step_in_progress if run else None
                oom.report(run_dir, events, _one_line(exc), step)
                outcome.update(outcome="error", kind="oom", step=step, message=f"Out of memory: {_one_line(exc)}")
                return WorkerExit.OOM
            if isinstance(exc, (SystemExit,)) and exc.code in (0, None):
                outcome.update(outcome="ok", kind=None, message=None)
                return WorkerExit.OK
            traceback.print_exc()
            fail("crash", f"Training failed: {_one_line(exc)} (details in {run_dir / _log_name(rank)})")
            return WorkerExit.FAILED
    except Terminated:
        # Not a cause: another rank failed first (its report or rank 0's events say how).
        outcome.update(outcome="terminated", kind=None, message="ended by torchrun after another process failed")
        return WorkerExit.FAILED
    finally:
        if rank.distributed:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the report be written; torchrun kills later
        events.close()
        if rank.distributed:
            write_rank_report(run_dir, rank, **outcome)
            _leave_process_group()


def _own_log(path: Path) -> None:
    """A rank other than 0 writes its library output and tracebacks to its own log, not into worker.log."""
    sys.stdout.flush()
    sys.stderr.flush()
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)


def _log_name(rank) -> str:
    return "worker.log" if rank.main else f"worker-rank-{rank.rank}.log"


def _use_own_device(rank) -> None:
    """Each rank on its own GPU (LOCAL_RANK), before anything loads: a model loaded without a
    device_map then lands there (Unsloth and the peft backend both load on the current device)."""
    if not rank.distributed:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(rank.local_rank)


def _leave_process_group() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # leaving is best effort: the process ends next
        pass


def _import_backend(name: str):
    if name == "unsloth":
        # Unsloth must come before transformers / TRL; the first import below is it.
        from engine.training.backends import unsloth_backend  # noqa: F401
    from engine.training.backends import load_backend

    return load_backend(name)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
