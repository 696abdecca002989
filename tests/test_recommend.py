"""The recommendation across GPU sizes and on the CPU: the best method that fits, and why."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.planner.architecture import inspect_model
from engine.planner.recommend import HEADROOM, recommend

CONFIGS = Path(__file__).resolve().parent / "configs"
RANK = {None: 0, "qlora": 1, "lora": 2, "full": 3}


def info(name):
    return inspect_model(str(CONFIGS / name))


@pytest.mark.parametrize(
    "vram, method, checkpointing, pinned",
    [(8, None, None, None), (16, "qlora", True, None), (24, "lora", True, "unsloth"), (48, "lora", False, None),
     (80, "full", False, None)],
)
def test_llama_8b_across_gpu_sizes(vram, method, checkpointing, pinned):
    rec = recommend(info("llama-3.1-8b"), vram)  # backend "auto": planned for Unsloth, peft checked
    assert rec.method == method and rec.planned_backend == "unsloth"
    if method is None:
        assert "Nothing fits in 8 GB" in rec.reason
        assert "max_seq_length 256" in rec.reason and "GPU with at least" in rec.reason and "would fit" in rec.reason
        return
    # Pinned to unsloth exactly when the same step would not fit on the peft backend.
    assert rec.backend == pinned
    assert (rec.by_backend["peft"] > vram * HEADROOM) == (pinned == "unsloth")
    assert rec.by_backend["unsloth"] == rec.estimate.total_gb
    assert rec.gradient_checkpointing is checkpointing
    assert rec.estimate.total_gb <= vram * HEADROOM
    assert rec.reason.endswith(".") and "\n" not in rec.reason
    if method in ("lora", "qlora"):
        assert rec.r == 16 and rec.lora_alpha == 32
        assert rec.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    else:
        assert rec.r is None and rec.target_modules == []


@pytest.mark.parametrize("name", ["smollm2-135m", "llama-3.2-1b", "phi-3-mini-4k", "qwen2.5-7b", "gemma-2-9b", "llama-3.1-70b"])
def test_more_memory_never_gives_a_worse_method(name):
    model = info(name)
    methods = [recommend(model, vram).method for vram in (8, 16, 24, 48, 80, 141)]
    assert [RANK[m] for m in methods] == sorted(RANK[m] for m in methods), methods


def test_small_model_full_fine_tunes_even_on_8gb():
    rec = recommend(info("smollm2-135m"), 8)
    assert rec.method == "full" and not rec.gradient_checkpointing
    assert rec.per_device_train_batch_size == 4 and rec.gradient_accumulation_steps == 4


def test_lower_batch_keeps_the_effective_batch():
    rec = recommend(info("gemma-2-9b"), 24, batch_size=8, gradient_accumulation_steps=2)
    assert rec.method == "lora"
    assert rec.per_device_train_batch_size < 8
    assert rec.per_device_train_batch_size * rec.gradient_accumulation_steps == 16
    assert "keeps the effective batch of 16" in rec.reason


def test_rank_64_is_offered_when_it_fits():
    roomy = recommend(info("llama-3.1-8b"), 48)
    assert roomy.higher_capacity_fits and "rank 64 would fit too" in roomy.reason
    tight = recommend(info("llama-3.1-8b"), 16, backend="peft")
    assert tight.method == "qlora" and not tight.higher_capacity_fits


def test_seventy_b_needs_80gb_and_says_what_would_fit_below():
    model = info("llama-3.1-70b")
    assert recommend(model, 80).method == "qlora"
    rec = recommend(model, 24)
    assert rec.method is None
    assert "a model under about" in rec.reason and "B parameters" in rec.reason
    assert rec.estimate.total_gb > 24 * HEADROOM


def test_cpu_only_plans_lora_against_ram():
    rec = recommend(info("smollm2-135m"), None, ram_gb=16)
    assert rec.method == "lora" and rec.device == "cpu"
    assert "No GPU" in rec.reason and "no faster on a CPU" in rec.reason
    assert rec.estimate.device == "cpu" and rec.estimate.total_gb <= 16 * 0.8
    unbounded = recommend(info("smollm2-135m"), None)
    assert unbounded.method == "lora"


def test_cpu_big_model_warns_and_falls_back_when_ram_is_short():
    model = info("llama-3.1-8b")
    roomy = recommend(model, None, ram_gb=64)
    assert roomy.method == "lora" and "trains very slowly on a CPU" in roomy.reason
    # fp32 embeddings (4.2 GB) and the activations a CPU worker's heap keeps: QLoRA needs about 13 GB.
    short = recommend(model, None, ram_gb=24)
    assert short.method == "qlora" and "does not fit" in short.reason
    none = recommend(info("llama-3.1-70b"), None, ram_gb=16)
    assert none.method is None and "too little" in none.reason


def test_effective_batch_rounds_up_when_not_divisible():
    rec = recommend(info("gemma-2-9b"), 24, batch_size=3, gradient_accumulation_steps=3)
    assert rec.per_device_train_batch_size * rec.gradient_accumulation_steps >= 9
    assert rec.gradient_accumulation_steps == math.ceil(9 / rec.per_device_train_batch_size)


@pytest.mark.parametrize("kwargs", [dict(seq_len=0), dict(batch_size=-1), dict(gradient_accumulation_steps=0)])
def test_bad_settings_are_user_errors(kwargs):
    with pytest.raises(UserError):
        recommend(info("smollm2-135m"), 24, **kwargs)
    with pytest.raises(UserError, match="--vram"):
        recommend(info("smollm2-135m"), -1)


def test_to_dict_is_json_ready():
    import json

    data = recommend(info("qwen2.5-7b"), 24).to_dict()
    assert json.loads(json.dumps(data))["method"] in ("lora", "qlora")


def test_fits_only_with_unsloth_kernels_says_so():
    rec = recommend(info("llama-3.1-70b"), 48)
    assert rec.method == "qlora" and rec.backend == "unsloth" and rec.gradient_checkpointing
    assert rec.estimate.components["logits"] < 1 and rec.estimate.total_gb <= 48 * HEADROOM
    assert "only with Unsloth's kernels" in rec.reason and "peft backend" in rec.reason
    assert "the session's backend is set to unsloth" in rec.reason
    assert rec.by_backend["peft"] > 48 * HEADROOM


@pytest.mark.parametrize(
    "vram, method, batch",
    [(8, None, None), (16, "qlora", 4), (24, "lora", 2), (48, "lora", 4), (80, "full", 4)],
)
def test_llama_8b_on_the_peft_backend(vram, method, batch):
    rec = recommend(info("llama-3.1-8b"), vram, backend="peft")
    assert rec.method == method and rec.planned_backend == "peft" and rec.backend is None
    if method is None:
        assert "on the peft backend" in rec.reason and "GPU with at least" in rec.reason
        return
    assert rec.per_device_train_batch_size == batch
    assert rec.estimate.backend == "peft" and rec.estimate.total_gb <= vram * HEADROOM
    assert "on the peft backend" in rec.reason


def test_peft_nothing_fits_points_to_unsloth():
    rec = recommend(info("llama-3.1-70b"), 48, backend="peft")
    assert rec.method is None
    assert "the unsloth backend (QLoRA about" in rec.reason
    assert rec.by_backend["peft"] > 48 * HEADROOM >= rec.by_backend["unsloth"]


def test_explicit_unsloth_backend_plans_like_auto_without_the_fallback_sentence():
    auto = recommend(info("llama-3.1-8b"), 24)
    unsloth = recommend(info("llama-3.1-8b"), 24, backend="unsloth")
    assert (unsloth.method, unsloth.per_device_train_batch_size) == (auto.method, auto.per_device_train_batch_size)
    assert unsloth.backend == "unsloth" and "only with Unsloth's kernels" in unsloth.reason
    assert "set to unsloth" in auto.reason and "set to unsloth" not in unsloth.reason


def test_rank_is_planned_for():
    model = info("llama-3.1-8b")
    r32 = recommend(model, 48, r=32)
    assert r32.r == 32 and r32.lora_alpha == 64 and "rank 32" in r32.reason
    assert r32.estimate.trainable_params == 2 * recommend(model, 48).estimate.trainable_params
    r64 = recommend(model, 48, r=64)
    assert r64.r == 64 and not r64.higher_capacity_fits and "would fit too" not in r64.reason
    with pytest.raises(UserError, match="--rank"):
        recommend(model, 48, r=0)
    with pytest.raises(UserError, match="--backend"):
        recommend(model, 48, backend="deepspeed")
