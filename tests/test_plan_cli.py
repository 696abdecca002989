"""`lora-tui plan`: the JSON contract of DESIGN.md, the table, and one-line errors. The errors run the
real command line (exit 2, one line on stderr); the plans call plan_command or build_plan in this
process, and test_distributed_plan's done-when runs a table and a --json plan through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.planner.hardware import HARDWARE_ENV, profile_from_dict
from engine.planner.plan import build_plan, format_plan

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs"
CONTRACT = [
    "model.params", "model.architecture", "target_modules.available", "target_modules.recommended",
    "trainable_params", "estimates.full.total_gb", "estimates.lora.total_gb", "estimates.qlora.total_gb",
    "estimates.full.components", "estimates.lora.components", "estimates.qlora.components",
    "recommendation.method", "recommendation.r", "recommendation.lora_alpha",
    "recommendation.per_device_train_batch_size", "recommendation.gradient_accumulation_steps",
    "recommendation.gradient_checkpointing", "recommendation.reason",
    "settings.backend", "estimates.full.by_backend.unsloth.total_gb", "estimates.full.by_backend.peft.total_gb",
    "estimates.lora.by_backend.unsloth.total_gb", "estimates.lora.by_backend.peft.total_gb",
    "estimates.qlora.by_backend.unsloth.total_gb", "estimates.qlora.by_backend.peft.total_gb",
]
LLAMA_8B = str(CONFIGS / "llama-3.1-8b")
CPU_ONLY = {"gpus": [], "cpu_cores": 8, "ram_total_gb": 31.3, "ram_available_gb": 24.6, "disk_free_gb": 120.0}
L4 = {"gpus": [{"name": "NVIDIA L4", "total_gb": 22.5, "free_gb": 22.0, "used_gb": 0.5, "compute_capability": [8, 9],
                "bf16": True, "driver": "550.90.07"}], "cpu_cores": 8, "ram_total_gb": 31.3, "ram_available_gb": 24.6,
      "disk_free_gb": 120.0}


def plan_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop(HARDWARE_ENV, None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "plan", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def lookup(data: dict, dotted: str):
    for key in dotted.split("."):
        data = data[key]
    return data


def plan_command_output(capsys, *args: str) -> str:
    """`lora-tui plan ARGS`'s stdout from plan_command itself (its argparse parser, build_plan, the
    printing), in this process: a subprocess would import torch and transformers again (10-25 s).
    tui.cli.main only dispatches to it; a refusal's one line and exit 2 go through the real command
    line below (test_bad_input_*), a success in test_distributed_plan's done-when (table and --json)."""
    from engine.planner.plan import plan_command

    capsys.readouterr()
    assert plan_command(list(args)) == 0
    return capsys.readouterr().out


def as_printed(plan: dict) -> dict:
    """The plan as `plan --json` prints it (plan_command: json.dumps(build_plan(...)))."""
    return json.loads(json.dumps(plan, indent=2))


def test_json_has_the_contract_keys(monkeypatch):
    # The figures, from build_plan (what plan_command prints); the contract is also checked on
    # plan_command's own --json output in test_backend_and_rank_flags.
    monkeypatch.delenv(HARDWARE_ENV, raising=False)
    plan = as_printed(build_plan(str(CONFIGS / "llama-3.1-8b"), gpu="RTX 4090"))
    for key in CONTRACT:
        lookup(plan, key)  # KeyError names the missing key
    assert plan["model"]["params"] == 8_030_261_248
    assert plan["model"]["architecture"] == "LlamaForCausalLM"
    assert plan["trainable_params"] == 41_943_040
    assert plan["target_modules"]["available"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert plan["recommendation"]["method"] == "lora"
    assert plan["hardware"]["gpu"] == "RTX 4090" and plan["hardware"]["source"] == "planned"
    for method in ("full", "lora", "qlora"):
        estimate = plan["estimates"][method]
        assert isinstance(estimate["total_gb"], float)
        assert set(estimate["components"]) == {"weights", "adapter", "gradients", "optimizer", "activations", "logits", "overhead"}
    assert plan["estimates"]["full"]["fits"] is False and plan["estimates"]["qlora"]["fits"] is True
    # No --backend: "auto", planned for Unsloth, with the peft figures beside it.
    assert plan["settings"]["backend"] == "unsloth" and plan["settings"]["backend_option"] == "auto"
    for method in ("full", "lora", "qlora"):
        both = plan["estimates"][method]["by_backend"]
        assert set(both) == {"unsloth", "peft"}
        assert both["unsloth"]["total_gb"] == plan["estimates"][method]["total_gb"]
        assert both["peft"]["total_gb"] > both["unsloth"]["total_gb"]  # checkpoints on the GPU, full logits


def test_backend_and_rank_flags(capsys, monkeypatch):
    monkeypatch.delenv(HARDWARE_ENV, raising=False)
    plan = json.loads(plan_command_output(capsys, "--model", LLAMA_8B, "--vram", "48", "--backend", "peft",
                                          "--rank", "32", "--json"))
    for key in CONTRACT:  # DESIGN.md's contract, on what the command prints
        lookup(plan, key)
    assert plan["settings"]["backend"] == "peft" and plan["settings"]["r"] == 32
    assert plan["recommendation"]["r"] == 32 and plan["recommendation"]["lora_alpha"] == 64
    assert plan["trainable_params"] == 2 * 41_943_040
    assert plan["estimates"]["lora"]["trainable_params"] == 2 * 41_943_040
    qlora = plan["estimates"]["qlora"]
    assert qlora["total_gb"] == qlora["by_backend"]["peft"]["total_gb"]
    assert plan["settings"]["gradient_checkpointing"] is True  # the peft backend keeps checkpoints on the GPU
    # Each backend's figure is the same whichever backend the plan is for.
    auto = build_plan(LLAMA_8B, vram_gb=48, hardware=profile_from_dict(CPU_ONLY), rank=32)
    for method in ("full", "lora", "qlora"):
        assert auto["estimates"][method]["by_backend"] == plan["estimates"][method]["by_backend"]


def test_peft_on_a_long_sequence_warns_before_it_runs_out_of_memory():
    """Hugging Face + FA2 fits Llama 3.1 8B QLoRA r 32 up to about 28k tokens on 80 GB (Unsloth's table):
    at that length the peft estimate is the card, over the 90 % budget; Unsloth's is a fraction of it."""
    base = profile_from_dict(CPU_ONLY)
    peft = build_plan(LLAMA_8B, vram_gb=80, hardware=base, seq_len=28454, batch=1, backend="peft", rank=32)
    qlora = peft["estimates"]["qlora"]
    assert qlora["total_gb"] == pytest.approx(80, rel=0.10) and qlora["total_gb"] > peft["hardware"]["budget_gb"]
    assert qlora["fits"] is False and qlora["by_backend"]["unsloth"]["fits"] is True
    assert peft["recommendation"]["method"] is None
    assert len(peft["warnings"]) == 1 and "would run out of memory" in peft["warnings"][0]
    assert "--backend unsloth" in peft["warnings"][0]
    text = format_plan(peft)
    assert "Warning" in text and "would run out of memory" in text and "Backend   peft" in text
    unsloth = build_plan(LLAMA_8B, vram_gb=80, hardware=base, seq_len=28454, batch=1, backend="unsloth", rank=32)
    assert unsloth["settings"]["backend"] == "unsloth"
    assert unsloth["estimates"]["qlora"]["total_gb"] < 0.25 * 80
    assert unsloth["recommendation"]["method"] is not None
    # The recommended plan fits only with Unsloth's kernels: said before a run, too.
    assert unsloth["recommendation"]["backend"] == "unsloth"
    assert any("peft backend would run out of memory" in w for w in unsloth["warnings"])
    # A shorter sequence fits either backend: no warning.
    short = build_plan(LLAMA_8B, vram_gb=80, hardware=base, seq_len=8192, batch=1, backend="peft", rank=32)
    assert short["estimates"]["qlora"]["fits"] is True and short["warnings"] == []


def test_table_through_the_hardware_seam(tmp_path, capsys, monkeypatch):
    path = tmp_path / "hardware.json"
    path.write_text(json.dumps(L4))
    monkeypatch.setenv(HARDWARE_ENV, str(path))  # probe_hardware reads it when the plan is for this machine
    out = plan_command_output(capsys, "--model", str(CONFIGS / "phi-3-mini-4k" / "config.json"), "--seq-len", "1024",
                              "--batch", "2")
    assert "NVIDIA L4 22.5 GB" in out
    assert "batch 2 x 1024 tokens" in out
    for word in ("full fine-tuning", "LoRA", "QLoRA", "weights", "logits", "overhead", "total", "fits in 20.25 GB"):
        assert word in out, word
    assert "qkv_proj" in out and "gate_up_proj" in out
    assert "Recommendation  LoRA, r 16, lora_alpha 32" in out


def test_cpu_only_machine_plans_with_ram(tmp_path, monkeypatch):
    # The same seam as the table test: no --gpu / --vram, so build_plan probes the machine, and
    # probe_hardware reads $LORA_TUI_HARDWARE.
    path = tmp_path / "hardware.json"
    path.write_text(json.dumps(CPU_ONLY))
    monkeypatch.setenv(HARDWARE_ENV, str(path))
    plan = as_printed(build_plan(str(CONFIGS / "smollm2-135m")))
    assert plan["hardware"]["source"] == f"file:{path}"
    assert plan["hardware"]["device"] == "cpu" and plan["hardware"]["vram_gb"] is None
    assert plan["recommendation"]["method"] == "lora"
    assert "No GPU" in plan["recommendation"]["reason"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "tests/configs/no-such-model"], "No such model file or folder"),
        (["--model", "tests/configs/smollm2-135m", "--vram", "-3"], "--vram must be a positive number"),
        (["--model", "tests/configs/smollm2-135m", "--vram", "abc"], "invalid float value"),
        (["--model", "tests/configs/smollm2-135m", "--gpu", "RTX 9090"], "not in the GPU catalogue"),
        (["--model", "tests/configs/smollm2-135m", "--gpu", "T4", "--vram", "8"], "not allowed with"),
        (["--model", "tests/configs/smollm2-135m", "--batch", "0"], "--batch must be a positive"),
        (["--model", "tests/configs/smollm2-135m", "--rank", "0"], "--rank must be a positive"),
        (["--model", "tests/configs/smollm2-135m", "--backend", "deepspeed"], "invalid choice"),
        (["--vram", "8"], "--model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = plan_cli(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lora-tui: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_config_without_architectures_is_one_line(tmp_path):
    data = json.loads((CONFIGS / "smollm2-135m" / "config.json").read_text())
    del data["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    done = plan_cli("--model", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no `architectures` field" in done.stderr


def test_build_plan_in_process_and_format():
    base = profile_from_dict(CPU_ONLY)
    plan = build_plan(str(CONFIGS / "gemma-2-9b"), vram_gb=16, hardware=base, seq_len=9000)
    # 9000 tokens x a 256k vocabulary: transformers' eager loss alone outgrows 16 GB; Unsloth's fused loss fits.
    assert plan["recommendation"]["method"] == "qlora" and plan["recommendation"]["backend"] == "unsloth"
    assert plan["estimates"]["qlora"]["components"]["logits"] < 2  # one 1,024-token chunk
    assert plan["estimates"]["qlora"]["by_backend"]["peft"]["total_gb"] > 16
    peft = build_plan(str(CONFIGS / "gemma-2-9b"), vram_gb=16, hardware=base, seq_len=9000, backend="peft")
    assert peft["estimates"]["qlora"]["components"]["logits"] > 16
    assert plan["hardware"]["vram_gb"] == 16.0 and plan["hardware"]["budget_gb"] == 14.4
    assert any("longer than the model's context length" in note for note in plan["notes"])
    text = format_plan(plan)
    assert "Gemma2ForCausalLM" in text and "Note" in text
    nothing = build_plan(str(CONFIGS / "llama-3.1-70b"), gpu="RTX 3060", hardware=base)
    assert nothing["recommendation"]["method"] is None
    assert "nothing fits" in format_plan(nothing)
    with pytest.raises(UserError):
        build_plan(str(CONFIGS / "smollm2-135m"), vram_gb=0, hardware=base)
