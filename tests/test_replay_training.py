"""`lora-tui --replay` trains the demo model for real on the CPU: LoRA, QLoRA, full fine-tuning,
Ctrl+C with a checkpoint, and --resume carrying the step count on."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LORA_TUI, ROOT, events_of, run_cli, small_session, write_session

pytestmark = pytest.mark.training


def _kinds(events):
    return [e["event"] for e in events]


def test_lora_trains_loss_falls_and_the_adapter_changes_the_model(tmp_path):
    session = small_session(
        tmp_path, training__max_steps=12, training__per_device_train_batch_size=4, training__learning_rate=1e-3,
    )
    result = run_cli("--replay", str(write_session(tmp_path, session)))
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    assert "step 1/12 | loss" in result.stdout and "ETA" in result.stdout and "tok/s" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr

    run_dir = tmp_path / "run"
    events = events_of(run_dir)
    assert {"start", "log", "checkpoint", "end"} <= set(_kinds(events))
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == list(range(1, 13))
    assert all(e["tokens_per_second"] > 0 for e in logs[1:])
    # The heartbeat: a step event at most twice a second, so at least the first and the last step
    # (a step here takes about a second: nearly all of them), each with progress the UI can show.
    beats = [e for e in events if e["event"] == "step"]
    assert beats[0]["step"] == 1 and beats[-1]["step"] == 12 and len(beats) >= 6
    assert all(b["tokens"] > 0 and b["total_steps"] == 12 and b["eta_seconds"] >= 0 for b in beats)
    assert all(later["time"] - earlier["time"] >= 0.45 for earlier, later in zip(beats, beats[1:-1]))
    assert "step 1/12 ▕" in result.stdout  # piped: the step counter as a plain line (the first one at once)
    losses = [e["loss"] for e in logs]
    # Measured here: 0.72 0.51 0.53 0.20 ... 0.13 0.07 0.07 0.10 (the JSON schema is learnt fast).
    first, last = sum(losses[:3]) / 3, sum(losses[-4:]) / 4
    assert last < 0.6 * first, f"loss did not fall enough: {losses}"

    adapter = run_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_dir()  # resolvable on this machine
    assert config["r"] == 8 and set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (adapter / "adapter_model.safetensors").stat().st_size > 1_000_000

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    inputs = tokenizer("### Instruction:\nExtract the contact details as JSON.\n\n### Response:\n", return_tensors="pt")
    with torch.no_grad():
        before = base(**inputs).logits
        tuned = PeftModel.from_pretrained(base, str(adapter))
        after = tuned(**inputs).logits
    assert (after - before).abs().max().item() > 1e-2


def test_qlora_trains_in_4bit(tmp_path):
    session = small_session(tmp_path, method="qlora", training__max_steps=3)
    result = run_cli("--replay", str(write_session(tmp_path, session)))
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    events = events_of(tmp_path / "run")
    loaded = next(e for e in events if e["event"] == "model")
    assert loaded["load_in_4bit"] and loaded["quantized_modules"] > 0
    assert 0 < loaded["trainable_params"] < loaded["total_params"]
    assert events[-1]["event"] == "end" and events[-1]["step"] == 3
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_full_finetuning_saves_a_whole_model(tmp_path):
    session = small_session(tmp_path, method="full", training__max_steps=2, training__learning_rate=1e-5)
    result = run_cli("--replay", str(write_session(tmp_path, session)))
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    events = events_of(tmp_path / "run")
    loaded = next(e for e in events if e["event"] == "model")
    assert loaded["trainable_params"] == loaded["total_params"]
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "config.json").exists() and list(model_dir.glob("*.safetensors"))
    assert events[-1]["event"] == "end" and events[-1]["model_dir"] == str(model_dir)


def test_ctrl_c_saves_a_checkpoint_and_resume_carries_on(tmp_path):
    session = small_session(tmp_path, training__max_steps=6, training__save_steps=100)
    path = write_session(tmp_path, session)
    run_dir = tmp_path / "run"
    process = subprocess.Popen([*LORA_TUI, "--replay", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and not any(e["event"] == "log" and e["step"] >= 2 for e in events_of(run_dir)):
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)  # what Ctrl+C in the terminal does
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err + out[-2000:]
    assert "Resume with: lora-tui --replay" in out and "--resume" in out
    end = events_of(run_dir)[-1]
    assert end["event"] == "end" and end["status"] == "stopped"
    stopped_at = end["step"]
    assert 2 <= stopped_at < 6
    assert (run_dir / f"checkpoint-{stopped_at}" / "trainer_state.json").exists()  # save_steps=100: only the stop saved

    again = run_cli("--replay", str(path))
    assert again.returncode == 2 and "--resume" in again.stderr  # a trained folder is never overwritten silently

    resumed = run_cli("--replay", str(path), "--resume")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout[-2000:]
    events = events_of(run_dir)
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["step"] == stopped_at and starts[1]["resume_from"].endswith(f"checkpoint-{stopped_at}")
    later_logs = [e["step"] for e in events[events.index(starts[1]):] if e["event"] == "log"]
    assert later_logs[0] == stopped_at + 1 and later_logs[-1] == 6
    assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
