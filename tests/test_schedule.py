"""The training-length and learning-rate rule (engine.planner.schedule) on row and token counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.planner.schedule import (
    MAX_EPOCHS,
    MIN_STEPS,
    estimate_seconds,
    learning_rate_for,
    plan_schedule,
    recommended_template,
    steps_per_epoch,
)
from engine.session.schema import session_from_dict


@pytest.mark.parametrize(("method", "params", "rate"), [
    ("lora", 7_000_000_000, 2e-4),  # the QLoRA paper's 7B rate is the anchor
    ("qlora", 8_030_261_248, 1.9e-4),
    ("lora", 1_235_814_400, 4.8e-4),
    ("lora", 134_515_008, 1e-3),  # the demo model: capped at 1e-3
    ("lora", 70_553_706_496, 1e-4),  # floored at the QLoRA paper's 33B/65B rate
    ("full", 7_000_000_000, 2e-5),  # a tenth: TRL's SFTConfig default at 7B
    ("full", 134_515_008, 1e-4),
    ("lora", None, 2e-4),  # unknown size: the usual default
])
def test_learning_rate_by_method_and_size(method, params, rate):
    assert learning_rate_for(method, params) == pytest.approx(rate)


def test_steps_per_epoch_counts_a_last_partial_step():
    assert steps_per_epoch(380, 4, 4) == 24
    assert steps_per_epoch(380, 4, 1) == 95
    assert steps_per_epoch(381, 4, 1) == 96
    assert steps_per_epoch(380, 4, 1, world_size=2) == 48


def test_demo_sized_set_gets_smaller_steps_not_more_epochs():
    """380 rows at 4 x 4 would be 24 steps: accumulation drops to 1 (95 steps), one epoch."""
    plan = plan_schedule(380, 137, "lora", 134_515_008, per_device_batch=4, gradient_accumulation=4)
    assert plan.gradient_accumulation_steps == 1
    assert plan.effective_batch == 4
    assert plan.num_train_epochs == 1
    assert plan.steps == 95
    assert plan.train_tokens == 380 * 137
    assert plan.learning_rate == pytest.approx(1e-3)
    assert any("accumulation 4 → 1" in reason for reason in plan.reasons)


def test_small_set_is_repeated_up_to_the_cap():
    plan = plan_schedule(100, 200, "lora", 8_000_000_000, per_device_batch=4, gradient_accumulation=4)
    assert plan.gradient_accumulation_steps == 1
    assert plan.steps_per_epoch == 25
    assert plan.num_train_epochs == MAX_EPOCHS  # 4 would reach MIN_STEPS; 3 is the cap
    assert plan.steps == 75
    assert "more rows would teach more" in " ".join(plan.reasons)


def test_middle_set_gets_a_second_epoch():
    plan = plan_schedule(300, 100, "lora", 8_000_000_000, per_device_batch=8, gradient_accumulation=2)
    assert plan.steps_per_epoch == 38 and plan.num_train_epochs == 3
    plan = plan_schedule(600, 100, "lora", 8_000_000_000, per_device_batch=8, gradient_accumulation=2)
    assert plan.steps_per_epoch == 75 and plan.num_train_epochs == 2


def test_large_set_keeps_the_batch_and_is_seen_once():
    plan = plan_schedule(50_000, 400, "qlora", 8_000_000_000, per_device_batch=4, gradient_accumulation=4)
    assert plan.gradient_accumulation_steps == 4  # memory's and the planner's choice stands
    assert plan.num_train_epochs == 1
    assert plan.steps == 3125
    assert plan.train_tokens == 50_000 * 400


def test_accumulation_is_lowered_only_as_far_as_needed():
    # 1,600 rows at batch 4: accumulation 4 gives exactly MIN_STEPS, so it stays.
    assert plan_schedule(1_600, 100, "lora", 1e9, 4, 4).gradient_accumulation_steps == 4
    # 800 rows: accumulation 2 gives 100 steps an epoch.
    plan = plan_schedule(800, 100, "lora", 1e9, 4, 4)
    assert plan.gradient_accumulation_steps == 2 and plan.steps == MIN_STEPS


def test_changes_are_valid_session_fields():
    plan = plan_schedule(380, 137, "lora", 134_515_008, 4, 4)
    session = session_from_dict({"dataset": {"path": "d.jsonl"}, "training": {"max_steps": 50}}).with_changes(plan.changes())
    assert session.training.max_steps == -1
    assert session.training.learning_rate == pytest.approx(1e-3)
    assert session.training.gradient_accumulation_steps == 1


def test_time_estimate_scales_with_tokens_and_device():
    from engine.planner import throughput
    from engine.planner.architecture import inspect_model

    configs = Path(__file__).resolve().parent / "configs"
    demo, llama = inspect_model(str(configs / "smollm2-135m")), inspect_model(str(configs / "llama-3.1-8b"))
    cpu = estimate_seconds(demo, "lora", 52_000, tokens_per_row=137, batch_size=4, gradient_checkpointing=False,
                           cpu_cores=2)
    assert 4 * 60 < cpu < 15 * 60  # the demo on 2 cores: minutes, not seconds or hours
    assert estimate_seconds(demo, "lora", 104_000, tokens_per_row=137, batch_size=4, gradient_checkpointing=False,
                            cpu_cores=2) == pytest.approx(2 * cpu)
    gpu = estimate_seconds(demo, "lora", 52_000, tokens_per_row=137, batch_size=4, gpu_name="NVIDIA H200")
    assert gpu < 30  # a small model on a GPU: launch-bound, seconds
    launch_bound = throughput.estimate_time(demo, "lora", peak_tflops=989.4, train_tokens=52_000, tokens_per_row=137,
                                            batch_size=4)
    assert gpu == pytest.approx(launch_bound.seconds)  # the wizard's figure is plan's figure
    assert launch_bound.seconds == pytest.approx(52_000 / (137 * 4) * throughput.MICRO_BATCH_FLOOR_S)
    # On a GPU it is the throughput model `plan` and the method step use: one figure everywhere.
    big = estimate_seconds(llama, "qlora", 20_000_000, tokens_per_row=512, batch_size=2, backend="unsloth",
                           gpu_name="NVIDIA GeForce RTX 4090")
    same = throughput.estimate_time(llama, "qlora", peak_tflops=165.2, train_tokens=20_000_000, tokens_per_row=512,
                                    batch_size=2, backend="unsloth")
    assert big == pytest.approx(same.seconds) and 3600 < big < 20 * 3600
    two = estimate_seconds(llama, "qlora", 20_000_000, tokens_per_row=512, batch_size=2, backend="unsloth",
                           gpu_name="RTX 4090", num_gpus=2)
    assert big / 2 < two < big  # two GPUs: faster, not quite twice


@pytest.mark.parametrize(("name", "template"), [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "chat"),
    ("/home/me/models/SmolLM2-135M-Instruct.Q4_1.gguf", "chat"),
    ("google/gemma-2-9b-it", "chat"),
    ("meta-llama/Llama-2-7b-chat-hf", "chat"),
    ("meta-llama/Llama-3.1-8B", "alpaca"),
    ("mistralai/Mistral-7B-v0.3", "alpaca"),
    ("Qwen/Qwen2.5-0.5B", "alpaca"),
])
def test_template_follows_the_model(name, template):
    assert recommended_template(name) == template
    assert recommended_template(name, has_chat_template=False) == "alpaca"
