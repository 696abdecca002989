"""How long to train and how fast: epochs, accumulation and learning rate from the data and the model.

The memory planner (recommend.py) picks what fits; this picks what teaches. Pure functions: the
wizard's hyperparameter step calls `plan_schedule` with the dataset's row and token counts and
applies the result where the person has not typed their own values.

The rule, and where each part comes from
----------------------------------------
1. Learning rate from the method and the model's size. LoRA and QLoRA: 2e-4 at 7B parameters
   (the QLoRA paper's rate for 7B and 13B, Dettmers et al. 2023, Table 9; the default of Unsloth's
   notebooks and of Axolotl's LoRA examples), scaled by 1/sqrt(parameters) (Thinking Machines'
   tinker-cookbook, hyperparam_utils.get_full_finetune_lr_multiplier: a learning rate known for one
   model transfers to another in proportion to 1/sqrt(parameter count); its calibrated LoRA rates
   are 3e-4 for Llama-3.1-8B and 70B and 1e-3 for Llama-3.2-1B and 3B), kept within 1e-4 (the QLoRA
   paper's rate for 33B and 65B) and 1e-3 (the highest rate tinker-cookbook calibrates). Full
   fine-tuning: a tenth of that ("LoRA Without Regret", Schulman et al. 2025: LoRA's best rate is
   about 10x full fine-tuning's), which gives 2e-5 at 7B, TRL's SFTConfig default.
2. Enough optimizer steps. A run needs on the order of a hundred optimizer steps to learn a new
   output format (the demo's contact extraction: 24 steps at 2e-4 left the tuned model exact on
   about one new message in five; at the rate above, the checkpoint after 20 of 95 steps answered 9
   of 20 eval rows exactly and the finished 95 steps 19 of 20; Unsloth's quick-start notebooks stop
   at 60 steps, TRL's and LLaMA-Factory's defaults are 3 epochs). So, for a small set, first fewer rows per step:
   gradient accumulation is lowered (never the per-device batch, which is what memory fixed) until
   one epoch holds MIN_STEPS steps or accumulation is 1; LoRA learns more per example at small
   batches ("LoRA Without Regret": LoRA is less tolerant of large batches than full fine-tuning), and
   Unsloth's, Axolotl's and LLaMA-Factory's examples train at effective batches of 8 or less.
3. Then epochs: one when an epoch holds MIN_STEPS (within 10 %), else as many as reach it, at most
   MAX_EPOCHS (3: TRL's and LLaMA-Factory's default `num_train_epochs`; Unsloth's guide advises 1-3,
   more overfits). A large set is seen once: repeating it costs time and teaches little
   (Unsloth's guide; the QLoRA paper trains its large sets for a fixed number of steps under one epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

LORA_LR_AT_7B = 2e-4
ANCHOR_PARAMS = 7e9
LORA_LR_MIN, LORA_LR_MAX = 1e-4, 1e-3
FULL_FT_DIVISOR = 10
MIN_STEPS = 100
MAX_EPOCHS = 3
EPOCH_TOLERANCE = 0.9  # an epoch of 90+ steps is "enough": no second pass for ten more steps

# The time estimate's CPU rate. GPUs use the throughput model (engine.planner.throughput: the
# catalogue's data-sheet peak, utilisation fitted per backend), as `plan` and the method step do.
# fp32 on AVX2 cores: the demo (95 steps, 52k tokens, 10 evaluations of 20 rows) took about 1,000
# CPU-seconds on a busy 2-core machine, about 35 GFLOP/s a core; a little less, to be safe.
CPU_GFLOPS_PER_CORE = 30.0
UNKNOWN_GPU_PEAK_TFLOPS = 100.0  # a GPU the catalogue does not list: an A10-class guess


@dataclass(frozen=True)
class Schedule:
    """What to train for, and why."""

    learning_rate: float
    gradient_accumulation_steps: int
    num_train_epochs: float
    steps: int  # optimizer steps
    steps_per_epoch: int
    effective_batch: int
    train_rows: int
    train_tokens: int  # tokens trained on over the whole run
    reasons: list[str] = field(default_factory=list)

    def changes(self) -> dict[str, Any]:
        """The session fields this schedule sets (max_steps back to -1: epochs decide)."""
        return {"training.learning_rate": self.learning_rate, "training.num_train_epochs": self.num_train_epochs,
                "training.gradient_accumulation_steps": self.gradient_accumulation_steps, "training.max_steps": -1}


def learning_rate_for(method: str, params: Optional[int]) -> float:
    """Rule 1: the learning rate for `method` on a model of `params` parameters (two significant digits)."""
    if not params or params <= 0:
        lora = LORA_LR_AT_7B
    else:
        lora = min(LORA_LR_MAX, max(LORA_LR_MIN, LORA_LR_AT_7B * math.sqrt(ANCHOR_PARAMS / params)))
    rate = lora / FULL_FT_DIVISOR if method == "full" else lora
    return float(f"{rate:.2g}")


def steps_per_epoch(rows: int, batch: int, accumulation: int, world_size: int = 1) -> int:
    """Optimizer steps in one epoch, as transformers counts them (a last partial step counts)."""
    batches = math.ceil(max(rows, 1) / (batch * max(world_size, 1)))
    return max(1, math.ceil(batches / accumulation))


def plan_schedule(train_rows: int, mean_tokens: float, method: str, params: Optional[int], per_device_batch: int,
                  gradient_accumulation: int, world_size: int = 1) -> Schedule:
    """Rules 2 and 3 (and 1): accumulation, epochs and learning rate for this data and model."""
    rows = max(int(train_rows), 1)
    reasons = []
    accumulation = max(1, int(gradient_accumulation))
    per_step_rows = per_device_batch * max(world_size, 1)
    if steps_per_epoch(rows, per_device_batch, accumulation, world_size) < MIN_STEPS and accumulation > 1:
        fitting = max(1, rows // (per_step_rows * MIN_STEPS))
        lowered = min(accumulation, fitting)
        if lowered < accumulation:
            reasons.append(f"gradient accumulation {accumulation} → {lowered}, so an epoch is "
                           f"{steps_per_epoch(rows, per_device_batch, lowered, world_size)} optimizer steps, not "
                           f"{steps_per_epoch(rows, per_device_batch, accumulation, world_size)}")
            accumulation = lowered
    per_epoch = steps_per_epoch(rows, per_device_batch, accumulation, world_size)
    if per_epoch >= MIN_STEPS * EPOCH_TOLERANCE:
        epochs = 1
        reasons.append(f"1 epoch ({per_epoch:,} steps are enough; a second pass would repeat the data)")
    else:
        epochs = min(MAX_EPOCHS, math.ceil(MIN_STEPS / per_epoch))
        short = "; still few: more rows would teach more" if epochs * per_epoch < MIN_STEPS * EPOCH_TOLERANCE else ""
        reasons.append(f"{epochs} epochs to reach about {MIN_STEPS} steps (at most {MAX_EPOCHS}{short})")
    rate = learning_rate_for(method, params)
    size = f"{params / 1e9:.2g}B" if params else "an unknown number of"
    reasons.append(f"learning rate {rate:g} for {method} at {size} parameters (2e-4 at 7B × √(7B/size), kept within 1e-4-1e-3"
                   + (", ÷10 for full fine-tuning" if method == "full" else "") + ")")
    return Schedule(
        learning_rate=rate, gradient_accumulation_steps=accumulation, num_train_epochs=float(epochs),
        steps=per_epoch * epochs, steps_per_epoch=per_epoch, effective_batch=per_step_rows * accumulation,
        train_rows=rows, train_tokens=int(round(rows * epochs * max(mean_tokens, 0.0))), reasons=reasons,
    )


def estimate_seconds(info, method: str, train_tokens: int, *, tokens_per_row: float, batch_size: int = 1,
                     trainable_params: int = 0, gradient_checkpointing: bool = True, backend: str = "auto",
                     gpu_name: Optional[str] = None, num_gpus: int = 1, cpu_cores: int = 1) -> float:
    """About how long training takes (evaluation and loading not counted): `train_tokens` over all
    epochs, on `gpu_name` (the throughput model) or, without one, on `cpu_cores` cores."""
    from engine.planner import throughput

    if gpu_name:
        from engine.planner.cost import catalogue_gpu

        spec = catalogue_gpu(gpu_name)
        peak = spec.peak_tflops if spec is not None and spec.peak_tflops else UNKNOWN_GPU_PEAK_TFLOPS
        return throughput.estimate_time(
            info, method, peak_tflops=peak, train_tokens=train_tokens, tokens_per_row=tokens_per_row,
            batch_size=batch_size, trainable_params=trainable_params, gradient_checkpointing=gradient_checkpointing,
            backend=backend, num_gpus=num_gpus).seconds
    cpu_method = "lora" if method == "qlora" else method  # no dequantisation kernels to pay for on a CPU
    per_token = throughput.flops_per_token(info, cpu_method, tokens_per_row=max(tokens_per_row, 1.0),
                                           trainable_params=trainable_params, gradient_checkpointing=gradient_checkpointing)
    return max(train_tokens, 0) * per_token / (CPU_GFLOPS_PER_CORE * 1e9 * max(cpu_cores, 1))


def recommended_template(model_name: str, has_chat_template: Optional[bool] = None) -> str:
    """The prompt layout for a model: its own chat template for an instruct / chat model, the Alpaca
    layout otherwise (a base model's chat tokens may be untrained).

    Measured on the demo (SmolLM2-135M-Instruct, the same 95 steps at lr 1e-3): the chat template's
    eval loss was lower early (0.134 against 0.149 after 10 steps, 0.054 against 0.062 after 30),
    both ended at 0.0157; the tuned model answered 19 of 20 eval rows exactly in the chat template
    and 18 of 20 in the Alpaca layout; and the chat template's rows are 8 % shorter (137 tokens
    against 149: no Alpaca preamble), so each step costs less."""
    if has_chat_template is False:
        return "alpaca"
    import re

    words = set(re.split(r"[^a-z0-9]+", model_name.lower()))
    instruct = bool(words & {"instruct", "chat", "it", "assistant"}) or "instruct" in model_name.lower()
    return "chat" if instruct else "alpaca"
