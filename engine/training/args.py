"""The session's `training` block as TRL `SFTConfig` keyword arguments.

Kept separate from the worker so it is readable and testable without importing TRL: this is
where a session field becomes a Trainer field.
"""

from __future__ import annotations

from pathlib import Path


def sft_config_kwargs(session, run_dir: Path, *, has_eval: bool, on_gpu: bool, bf16_ok: bool) -> dict:
    t = session.training
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
        logging_steps=t.logging_steps,
        logging_first_step=True,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        seed=t.seed,
        gradient_checkpointing=bool(t.gradient_checkpointing),
        # Checkpoints keep optimizer and scheduler state so a stopped or crashed run resumes exactly.
        save_strategy="steps",
        # No save_steps: one checkpoint every quarter of the run, so a crash loses little.
        save_steps=t.save_steps or 0.25,
        save_total_limit=t.save_total_limit,
        max_length=session.model.max_seq_length,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if has_eval:
        # No eval_steps: evaluate five times over the run, enough to see a trend.
        eval_steps = t.eval_steps or 0.2
        # Tracking eval_loss makes the Trainer keep the best checkpoint through save_total_limit:
        # it is the one an overfitting finding tells the person to stop at.
        kwargs.update(eval_strategy="steps", eval_steps=eval_steps, metric_for_best_model="eval_loss",
                      greater_is_better=False)
        if not t.save_steps:
            kwargs["save_steps"] = eval_steps  # a checkpoint at every evaluation, so the best one exists
    else:
        kwargs.update(eval_strategy="no")
    if on_gpu:
        kwargs.update(bf16=bf16_ok, fp16=not bf16_ok)
    else:
        kwargs.update(bf16=False, fp16=False, use_cpu=True)
        if t.optim in ("adamw_8bit", "paged_adamw_8bit"):
            # bitsandbytes' 8-bit optimizers need CUDA; on CPU the same update in 32-bit.
            kwargs["optim"] = "adamw_torch"
    return kwargs
