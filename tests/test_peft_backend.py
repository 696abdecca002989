"""The peft backend (transformers + PEFT + TRL, no Unsloth) trains the same session as the Unsloth
backend on the CPU, and `backend: "auto"` falls back to it when Unsloth cannot start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, events_of, run_cli, small_session, write_session

pytestmark = pytest.mark.training

STEPS = 2


def _session(tmp_path: Path, backend: str) -> dict:
    return small_session(tmp_path, backend=backend, training__max_steps=STEPS)


def _loads_with_peft(adapter: Path) -> int:
    """PeftModel.from_pretrained on the base the adapter names; returns the LoRA parameter count."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def _first_loss(run_dir: Path) -> float:
    return next(e["loss"] for e in events_of(run_dir) if e["event"] == "log")


@pytest.fixture(scope="module")
def peft_run(tmp_path_factory) -> tuple[Path, str]:
    """The real worker entry point with --backend peft, in a child that then reports its sys.modules."""
    from engine.session.schema import save_session, session_from_dict

    tmp = tmp_path_factory.mktemp("peft")
    session = session_from_dict(_session(tmp, "peft"))
    run_dir = Path(session.output.dir)
    run_dir.mkdir(parents=True)
    save_session(session, run_dir / "session.json")
    probe = (
        "import sys\n"
        "from engine.training.worker import main\n"
        f"code = main([{str(run_dir)!r}, '--backend', 'peft'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('unsloth', 'unsloth_zoo'))\n"
        "sys.__stdout__.write('UNSLOTH_MODULES=' + ','.join(loaded) + '\\n')\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=1800, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return run_dir, result.stdout


def test_peft_backend_trains_without_ever_importing_unsloth(peft_run):
    run_dir, stdout = peft_run
    assert "UNSLOTH_MODULES=\n" in stdout  # not one unsloth module in the worker process
    events = events_of(run_dir)
    loading = next(e for e in events if e["event"] == "status" and e["state"] == "loading_model")
    assert loading["backend"] == "peft"
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == [1, 2] and all(e["loss"] > 0 for e in logs)
    assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
    adapter = run_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["r"] == 8
    assert _loads_with_peft(adapter) == next(e for e in events if e["event"] == "model")["trainable_params"]


def test_unsloth_and_peft_give_comparable_runs_and_interchangeable_adapters(peft_run, tmp_path):
    peft_dir, _ = peft_run
    result = run_cli("--replay", str(write_session(tmp_path, _session(tmp_path, "unsloth"))))
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    unsloth_dir = tmp_path / "run"
    # Same session, same seed, same first batch: the loss before any update is the same model's loss.
    first_unsloth, first_peft = _first_loss(unsloth_dir), _first_loss(peft_dir)
    assert abs(first_unsloth - first_peft) / first_peft < 0.1, (first_unsloth, first_peft)
    configs = [json.loads((d / "adapter" / "adapter_config.json").read_text()) for d in (unsloth_dir, peft_dir)]
    for key in ("r", "lora_alpha", "peft_type", "base_model_name_or_path"):
        assert configs[0][key] == configs[1][key], key
    assert set(configs[0]["target_modules"]) == set(configs[1]["target_modules"])
    assert _loads_with_peft(unsloth_dir / "adapter") == _loads_with_peft(peft_dir / "adapter")


def test_auto_falls_back_to_peft_when_unsloth_cannot_start(tmp_path, monkeypatch):
    # With this switch `import unsloth` raises on a machine without a GPU ("Unsloth cannot find any
    # torch accelerator"), as it would where Unsloth is broken or absent.
    monkeypatch.setenv("UNSLOTH_DISABLE_CPU_FALLBACK", "1")
    import torch

    if torch.cuda.is_available():
        pytest.skip("Unsloth starts on a GPU machine whatever the switch says")
    result = run_cli("--replay", str(write_session(tmp_path, _session(tmp_path, "auto"))))
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    assert "falling back to the peft backend" in result.stdout and "Traceback" not in result.stdout + result.stderr
    events = events_of(tmp_path / "run")
    kinds = [e["event"] for e in events]
    failed = next(e for e in events if e["event"] == "error")
    assert failed["kind"] == "backend_unavailable" and failed["backend"] == "unsloth"
    fallback = events[kinds.index("fallback")]
    assert fallback["backend"] == "peft" and kinds.index("error") < kinds.index("fallback")
    loading = [e["backend"] for e in events if e["event"] == "status" and e.get("state") == "loading_model"]
    assert loading == ["peft"]  # the Unsloth worker died at import, before loading anything
    assert events[-1]["event"] == "end" and events[-1]["status"] == "completed" and events[-1]["step"] == STEPS
    assert _loads_with_peft(tmp_path / "run" / "adapter") > 0

    # ... and the dashboard says so, from the same events.
    from engine.runs.progress import RunProgress

    view = RunProgress()
    for event in events:
        view.apply(event)
    assert view.status_word == "completed"
    assert any("falling back to the peft backend" in note for note in view.notes)
