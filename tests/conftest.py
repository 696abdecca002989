"""Shared fixtures: the demo model and data, session files, and running the CLI as a person does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LORA_TUI = [sys.executable, "-m", "tui.cli"]


@pytest.fixture(autouse=True, scope="session")
def _own_state_folder(tmp_path_factory):
    """The suite's runs and drafts stay out of the person's ~/.local/state/lora-tui (tests that
    need their own state folder still set LORA_TUI_STATE themselves)."""
    os.environ.setdefault("LORA_TUI_STATE", str(tmp_path_factory.mktemp("state")))
    yield


def small_session(tmp_path: Path, **overrides) -> dict:
    """A session that trains the demo model for a handful of steps on the CPU."""
    session = {
        "version": 1,
        "model": {"name": DEMO_MODEL, "max_seq_length": 256},
        "method": "lora",
        "backend": "unsloth",
        "lora": {"r": 8, "lora_alpha": 16},
        "dataset": {"path": str(DEMO_DATA), "eval_fraction": 0.0},
        "training": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_steps": 4,
                     "logging_steps": 1, "learning_rate": 5e-4, "warmup_ratio": 0.0},
        "output": {"dir": str(tmp_path / "run")},
    }
    for dotted, value in overrides.items():
        node = session
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return session


def write_session(tmp_path: Path, session: dict, name: str = "session.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(session, indent=2))
    return path


def run_cli(*args: str, timeout: float = 900, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([*LORA_TUI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env)


def events_of(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture(scope="session")
def demo_model_path() -> str:
    from engine.models import resolve_model

    return resolve_model(DEMO_MODEL).path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One real finished LoRA run (peft backend, 2 steps at a high learning rate so the adapter
    visibly changes the model, output.save_merged on), shared by the export, try-it and
    finish-screen tests. Tests that write into a run folder copy it first (see copy_run)."""
    tmp = tmp_path_factory.mktemp("finished")
    session = small_session(tmp, backend="peft", training__max_steps=2, training__learning_rate=5e-3,
                            output__save_merged=True)
    result = run_cli("--replay", str(write_session(tmp, session)))
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    return tmp / "run"


def copy_run(run_dir: Path, target: Path) -> Path:
    """A finished run folder without its checkpoints and merged model (the adapter names its base
    by absolute path, so the copy still loads)."""
    import shutil

    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoint-*", "merged*"))
    return target
