"""The training process: `python -m engine.training.worker RUN_DIR --backend unsloth|peft [--resume]`.

Runs in its own process (and process group), never in the UI: Unsloth must be imported first
and patches the whole process; a crash or an out-of-memory error must not take the UI down. It
reads RUN_DIR/session.json, trains, and writes events.jsonl; its own stdout and stderr (library
banners, warnings, tracebacks) go to RUN_DIR/worker.log, kept out of the person's terminal.

Exit codes are `WorkerExit` (engine.training.exit_codes); the error event carries the one-line message.
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


class StopFlag:
    """Set by SIGINT / SIGTERM or a STOP file; checked by the training callback after each step."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.signalled = False

    def install(self) -> None:
        def handler(signum, frame):
            self.signalled = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    @property
    def requested(self) -> bool:
        return self.signalled or (self.run_dir / STOP_FILE).exists()


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m engine.training.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--backend", choices=["unsloth", "peft"], required=True)
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    run_dir = Path(args.run_dir).resolve()
    # Keep Unsloth's compile cache out of the person's working directory.
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(run_dir / ".unsloth_compiled_cache"))
    from engine.runs.events import EventWriter

    events = EventWriter(run_dir)
    stop = StopFlag(run_dir)
    stop.install()
    try:
        backend = _import_backend(args.backend)
    except Exception as exc:  # any import failure means "this backend cannot start here"
        traceback.print_exc()
        events.emit("error", kind="backend_unavailable", backend=args.backend,
                    message=f"The {args.backend} backend cannot start here: {_one_line(exc)}")
        return WorkerExit.BACKEND_UNAVAILABLE

    from engine.errors import UserError

    run = None
    try:
        from engine.training.run import TrainingRun

        run = TrainingRun(run_dir, backend, events, stop, resume=args.resume)
        run.run()
        return WorkerExit.OK
    except UserError as exc:
        events.emit("error", kind="input", message=str(exc))
        return WorkerExit.BAD_INPUT
    except BaseException as exc:  # the worker reports every failure as an event
        from engine.troubleshooting import oom

        if oom.is_oom(exc):
            traceback.print_exc()
            oom.report(run_dir, events, _one_line(exc), run.step_in_progress if run else None)
            return WorkerExit.OOM
        if isinstance(exc, (SystemExit,)) and exc.code in (0, None):
            return WorkerExit.OK
        traceback.print_exc()
        events.emit("error", kind="crash", message=f"Training failed: {_one_line(exc)} (details in {run_dir / 'worker.log'})")
        return WorkerExit.FAILED
    finally:
        events.close()


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
