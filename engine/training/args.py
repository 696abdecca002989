"""The session's `training` block as TRL `SFTConfig` keyword arguments.

Kept separate from the worker so it is readable and testable without importing TRL: this is
where a session field becomes a Trainer field.
"""

from __future__ import annotations

import math
from pathlib import Path

# What "auto" aims for over a whole run, whatever its length.
AUTO_LOSS_POINTS = 100
AUTO_EVALUATIONS = 10
AUTO_CHECKPOINTS = 4


def total_optimizer_steps(train_rows: int, batch_size: int, accumulation: int, epochs: float, max_steps: int = -1,
                          world_size: int = 1) -> int:
    """Optimizer steps the Trainer will take, as transformers counts them (max_steps wins)."""
    if max_steps and max_steps > 0:
        return max_steps
    batches = math.ceil(max(train_rows, 1) / (batch_size * max(world_size, 1)))
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return max(math.ceil(per_epoch * epochs), 1)


def auto_steps(total_steps: int, has_eval: bool) -> dict[str, int]:
    """logging / eval / save steps for "auto": about 100 loss points, 10 evaluations and 4
    checkpoints, never below one step. With evaluation, checkpoints fall on evaluation steps (a
    multiple of eval_steps) so the best checkpoint by eval_loss is one that exists."""
    total = max(total_steps, 1)
    logging = max(1, round(total / AUTO_LOSS_POINTS))
    evaluation = max(1, round(total / AUTO_EVALUATIONS))
    if has_eval:
        save = evaluation * max(1, round(AUTO_EVALUATIONS / AUTO_CHECKPOINTS))
    else:
        save = max(1, round(total / AUTO_CHECKPOINTS))
    return {"logging_steps": logging, "eval_steps": evaluation, "save_steps": save}


def resolved_steps(training, total_steps: int, has_eval: bool) -> dict[str, int]:
    """The session's logging_steps / eval_steps / save_steps with "auto" (or null) worked out."""
    auto = auto_steps(total_steps, has_eval)
    chosen = {name: getattr(training, name) for name in auto}
    return {name: value if isinstance(value, int) else auto[name] for name, value in chosen.items()}


def sft_config_kwargs(session, run_dir: Path, *, has_eval: bool, on_gpu: bool, bf16_ok: bool,
                      train_rows: int = 0, world_size: int = 1) -> dict:
    t = session.training
    total = total_optimizer_steps(train_rows, t.per_device_train_batch_size, t.gradient_accumulation_steps,
                                  t.num_train_epochs, t.max_steps, world_size)
    steps = resolved_steps(t, total, has_eval)
    kwargs = dict(
        output_dir=str(run_dir),
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        # transformers 5 dropped warmup_ratio; warmup_steps takes a float in [0, 1) as a ratio.
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        logging_steps=steps["logging_steps"],
        logging_first_step=True,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        seed=t.seed,
        gradient_checkpointing=bool(t.gradient_checkpointing),
        # Checkpoints keep optimizer and scheduler state so a stopped or crashed run resumes exactly.
        save_strategy="steps",
        save_steps=steps["save_steps"],
        save_total_limit=t.save_total_limit,
        max_length=session.model.max_seq_length,
        # Trackers pass through under TRL's names; TensorBoard writes into the run folder (tracker_environment).
        report_to=t.trackers or "none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if has_eval:
        # Tracking eval_loss makes the Trainer keep the best checkpoint through save_total_limit:
        # it is the one an overfitting finding tells the person to stop at.
        kwargs.update(eval_strategy="steps", eval_steps=steps["eval_steps"], metric_for_best_model="eval_loss",
                      greater_is_better=False)
    else:
        kwargs.update(eval_strategy="no")
    if world_size > 1:
        # Several processes (torchrun). transformers asks DDP to look for unused parameters on a PEFT
        # model; with reentrant gradient checkpointing (Unsloth's) that fails with "lora_B ... marked
        # as ready twice". Every trainable parameter gets a gradient here, so the search is not needed.
        kwargs["ddp_find_unused_parameters"] = False
        if not on_gpu:
            kwargs["ddp_backend"] = "gloo"  # the CPU's collectives (NCCL is for GPUs)
        # FSDP is not set here: `fsdp` / `fsdp_config` silently train with DDP on the CPU (accelerate
        # builds FSDP only for GPU backends). engine.training.fsdp shards the model instead.
    if on_gpu:
        kwargs.update(bf16=bf16_ok, fp16=not bf16_ok)
        if session.distributed.cpu_offload and t.optim in ("adamw_8bit", "paged_adamw_8bit"):
            # FSDP's CPU offload steps the optimizer on the shards in RAM, which bitsandbytes' 8-bit
            # (CUDA) optimizers cannot; the same update in 32-bit (Unsloth swaps it the same way).
            kwargs["optim"] = "adamw_torch"
    else:
        kwargs.update(bf16=False, fp16=False, use_cpu=True)
        if t.optim in ("adamw_8bit", "paged_adamw_8bit"):
            # bitsandbytes' 8-bit optimizers need CUDA; on CPU the same update in 32-bit.
            kwargs["optim"] = "adamw_torch"
    return kwargs


TENSORBOARD_DIR = "tensorboard"


def tracker_environment(session, run_dir: Path) -> dict[str, str]:
    """Environment for the worker's trackers: TensorBoard's event files in RUN_DIR/tensorboard (so
    `tensorboard --logdir runs/` finds every run; transformers 5 takes the folder only from
    TENSORBOARD_LOGGING_DIR), W&B's local files in the run folder too. The person's own settings win."""
    env = {}
    trackers = session.training.trackers
    if "tensorboard" in trackers:
        env["TENSORBOARD_LOGGING_DIR"] = str(Path(run_dir).absolute() / TENSORBOARD_DIR)
    if "wandb" in trackers:
        env["WANDB_DIR"] = str(Path(run_dir).absolute())
    return env
