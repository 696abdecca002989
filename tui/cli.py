"""The `lora-tui` command line: the wizard, `--replay`, and the subcommands in SUBCOMMANDS.

Imports stay light here; each command imports what it needs when it runs. Every `UserError` is
printed as one line (no traceback) and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from engine import __version__
from engine.errors import UserError


def _main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-tui",
        description="Fine-tune a language model with LoRA, QLoRA or full fine-tuning from the terminal.",
        epilog="Commands: `lora-tui plan --model M` (memory and recommendation), `lora-tui runs` (known runs), "
        "`lora-tui attach RUN_DIR` (watch a run), `lora-tui stop RUN_DIR` (stop after this step), "
        "`lora-tui export RUN_DIR --gguf TYPE` (a checked GGUF and an Ollama Modelfile), "
        "`lora-tui models cache M` (resolve and cache a model). Each has --help.",
    )
    parser.add_argument("--version", action="version", version=f"lora-tui {__version__}")
    parser.add_argument("--replay", metavar="SESSION.json", help="run a saved session headless")
    parser.add_argument("--dry-run", action="store_true", help="with --replay: check everything, train nothing")
    parser.add_argument("--resume", action="store_true", help="with --replay: continue from the last checkpoint in output.dir")
    parser.add_argument(
        "--node-rank", type=int, metavar="I",
        help="with --replay: this node's number (0 to distributed.nnodes - 1) when the session trains on several nodes; "
        "run the same session on every node, node 0 first",
    )
    parser.add_argument(
        "--no-oom-retry", action="store_true",
        help="with --replay: stop at an out-of-memory error instead of retrying with the cheapest remedy",
    )
    add_wizard_arguments(parser.add_argument_group("the wizard"))
    return parser


def add_wizard_arguments(group) -> None:
    """Where the wizard starts: shared by `lora-tui` and `lora-tui serve` (each browser tab)."""
    group.add_argument("--session", metavar="SESSION.json", help="open this session")
    group.add_argument("--model", help="start with this model (hub id, folder or .gguf)")
    group.add_argument("--dataset", help="start with this dataset file")
    group.add_argument("--gpu", help="plan for this GPU from the catalogue instead of the one found")
    group.add_argument("--vram", type=float, metavar="GB", help="plan for this much VRAM")


# `lora-tui NAME ...`: the function that runs each subcommand, as "module:function". Each parses its
# own arguments (argv after NAME) and returns the exit code; it is imported only when used.
SUBCOMMANDS = {
    "plan": "engine.planner.plan:plan_command",
    "models": "tui.cli:models_command",
    "attach": "tui.attach:attach_command",
    "runs": "engine.runs.commands:runs_command",
    "stop": "engine.runs.commands:stop_command",
    "eval": "engine.evaluation.evaluate:eval_command",
    "export": "engine.export.gguf:export_command",
    "serve": "tui.serve:serve_command",
}


def models_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lora-tui models", description="Resolve and cache models.")
    sub = parser.add_subparsers(dest="action", required=True)
    cache = sub.add_parser("cache", help="resolve a model (hub id, folder or .gguf) and cache it locally")
    cache.add_argument("name")
    args = parser.parse_args(argv)
    from engine.models import resolve_model

    resolved = resolve_model(args.name, announce=print)
    print(f"{args.name} -> {resolved.path}")
    return 0


def _subcommand(name: str):
    import importlib

    module, function = SUBCOMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Every command: the wizard's workers import torch too, and a library's warning written to
    # stderr lands on the person's terminal (over the screen, or after it closes).
    from engine.quiet import quiet_libraries

    quiet_libraries()
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _subcommand(argv[0])(argv[1:])
        args = _main_parser().parse_args(argv)
        if args.replay:
            from engine.training.supervisor import replay

            return replay(args.replay, dry_run=args.dry_run, resume=args.resume, oom_retry=not args.no_oom_retry,
                          node_rank=args.node_rank)
        if args.dry_run or args.resume or args.node_rank is not None:
            raise UserError("--dry-run, --resume and --node-rank go with --replay SESSION.json.")
        from tui.app import run_wizard

        return run_wizard(
            session_path=args.session, model=args.model, dataset=args.dataset, gpu=args.gpu, vram_gb=args.vram
        )
    except UserError as error:
        print(f"lora-tui: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("lora-tui: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lora-tui plan ... | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as error:  # a bug of ours still gets one line, the details a log
        log = _log_traceback()
        print(f"lora-tui: unexpected error: {type(error).__name__}: {error} (details in {log})", file=sys.stderr)
        return 1


def _log_traceback() -> str:
    import traceback

    from engine.paths import state_dir

    path = state_dir() / "lora-tui.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(traceback.format_exc() + "\n")
    except OSError:
        return "(no log: state folder not writable)"
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
