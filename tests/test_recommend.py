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
    "vram, method, checkpointing",
    [(8, None, None), (16, "qlora", True), (24, "lora", True), (48, "lora", False), (80, "full", False)],
)
def test_llama_8b_across_gpu_sizes(vram, method, checkpointing):
    rec = recommend(info("llama-3.1-8b"), vram)
    assert rec.method == method
    if method is None:
        assert "Nothing fits in 8 GB" in rec.reason
        assert "max_seq_length 256" in rec.reason and "GPU with at least" in rec.reason and "would fit" in rec.reason
        return
    assert rec.backend is None  # fits the plain transformers + PEFT path too
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
    tight = recommend(info("llama-3.1-8b"), 24)
    assert not tight.higher_capacity_fits


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
    short = recommend(model, None, ram_gb=16)
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
