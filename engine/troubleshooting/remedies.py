"""Remedies: concrete changes to a session that fix what the diagnostics found.

A remedy is a plain dict, so it travels inside `finding` events in `events.jsonl`:

    {"id": "lower_learning_rate", "label": "Lower the learning rate to 4e-05",
     "changes": {"training.learning_rate": 4e-05}, "restart": "fresh"}

`changes` maps dotted session paths to new values. `restart` says how the run continues once the
change is saved: "resume" (from the last checkpoint; the change does not disturb what the
checkpoint holds), "fresh" (start over: the change alters weight shapes, or state the checkpoint
would override), or None for advice that changes nothing (add data, look at a rendered example).
OOM remedies (engine.troubleshooting.oom) also carry `estimate_gb`, the planner's estimate of peak memory after the change.

`apply_remedy` returns a new, validated `Session`; the caller saves it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from engine.session.schema import Session, session_from_dict

Remedy = dict[str, Any]

RESUME = "resume"
FRESH = "fresh"

# LoRA learns at roughly 1e-4 to 3e-4; full fine-tuning an order of magnitude lower.
TYPICAL_LR = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}
MAX_RANK = 256


# -- applying --------------------------------------------------------------------------------------

def apply_remedy(session: Session, remedy: Remedy) -> Session:
    """The session with the remedy's changes, validated; raises `SessionError` naming the field."""
    return session.with_changes(remedy.get("changes") or {}, where=f"remedy {remedy.get('id', 'remedy')!r}")


def as_session(session: Session | dict) -> Session:
    return session if isinstance(session, Session) else session_from_dict(session)


# -- formatting ------------------------------------------------------------------------------------

def fmt_lr(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-") if value < 1e-3 else f"{value:g}"


def round_sig(value: float, digits: int = 2) -> float:
    """2e-4 stays 2e-4, 6.666e-5 becomes 6.7e-5: values a person would type."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def make_remedy(id: str, label: str, changes: dict, restart: Optional[str], **extra: Any) -> Remedy:
    return {"id": id, "label": label, "changes": changes, "restart": restart, **extra}


# -- learning rate, rank, data (no_decrease, nan, divergence) --------------------------------------

def raise_learning_rate(session: Session, applied_lr: Optional[float] = None) -> Optional[Remedy]:
    current = session.training.learning_rate
    typical = TYPICAL_LR[session.method]
    target = typical if current < typical / 2 else round_sig(current * 2)
    if target > 10 * typical or target <= current:
        return None
    seen = f" (the run applied {fmt_lr(applied_lr)})" if applied_lr is not None and applied_lr < current * 0.5 else ""
    # Fresh: a resumed Trainer restores the scheduler from the checkpoint and would keep the old rate.
    return make_remedy(
        "raise_learning_rate",
        f"Raise the learning rate from {fmt_lr(current)} to {fmt_lr(target)}{seen}",
        {"training.learning_rate": target},
        FRESH,
    )


def lower_learning_rate(session: Session, factor: float = 0.25) -> Remedy:
    current = session.training.learning_rate
    target = round_sig(current * factor)
    return make_remedy(
        "lower_learning_rate",
        f"Lower the learning rate from {fmt_lr(current)} to {fmt_lr(target)}",
        {"training.learning_rate": target},
        FRESH,
    )


def raise_rank(session: Session) -> Optional[Remedy]:
    if session.method == "full" or session.lora.r >= MAX_RANK:
        return None
    r = session.lora.r * 2
    alpha = session.lora.lora_alpha * 2  # keeps alpha / r, so the update scale stays the same
    # Fresh: the adapter's matrices change shape.
    return make_remedy(
        "raise_rank",
        f"Raise the LoRA rank from {session.lora.r} to {r} (lora_alpha {alpha})",
        {"lora.r": r, "lora.lora_alpha": alpha},
        FRESH,
    )


def check_data(session: Session, example: Optional[str] = None) -> Remedy:
    extra = {"example": example} if example else {}
    return make_remedy(
        "check_data",
        f"Check the data formatting: show a rendered example of {session.dataset.path}",
        {},
        None,
        **extra,
    )


def more_warmup(session: Session) -> Optional[Remedy]:
    current = session.training.warmup_ratio
    target = round_sig(min(0.3, max(0.1, current * 3)))
    if target <= current:
        return None
    return make_remedy(
        "more_warmup",
        f"Warm up longer: warmup_ratio {current:g} to {target:g}",
        {"training.warmup_ratio": target},
        FRESH,
    )


def clip_gradients(session: Session) -> Optional[Remedy]:
    current = session.training.max_grad_norm
    target = round_sig(current * 0.3)
    if target < 0.1:
        return None
    # Resume is safe: clipping is read from the arguments at every step.
    return make_remedy(
        "clip_gradients",
        f"Clip gradients harder: max_grad_norm {current:g} to {target:g}",
        {"training.max_grad_norm": target},
        RESUME,
    )


def check_precision(session: Session) -> Remedy:
    return make_remedy(
        "check_precision",
        "Check the precision: fp16 overflows where bf16 would not; on a GPU without bf16 "
        "(compute capability below 8.0) keep the learning rate low or train in fp32",
        {},
        None,
    )


# -- overfitting -----------------------------------------------------------------------------------

def stop_at_best(session: Session, best_step: int, checkpoint: Optional[str] = None) -> Remedy:
    extra = {"checkpoint": checkpoint} if checkpoint else {}
    where = f"; {checkpoint} already holds it" if checkpoint else ""
    return make_remedy(
        "stop_at_best",
        f"Stop at the best evaluation, step {best_step} (max_steps {best_step}){where}",
        {"training.max_steps": int(best_step)},
        FRESH,
        best_step=int(best_step),
        **extra,
    )


def fewer_epochs(session: Session, best_epoch: Optional[float]) -> Optional[Remedy]:
    if session.training.max_steps > 0 or best_epoch is None:
        return None  # a max_steps run stops by steps: stop_at_best covers it
    current = float(session.training.num_train_epochs)
    target = max(0.1, math.ceil(best_epoch * 10) / 10)
    if target >= current:
        return None
    return make_remedy(
        "fewer_epochs",
        f"Train fewer epochs: num_train_epochs {current:g} to {target:g}",
        {"training.num_train_epochs": target},
        FRESH,
    )


def more_dropout(session: Session) -> Optional[Remedy]:
    if session.method == "full":
        return None
    current = session.lora.lora_dropout
    target = round(min(0.3, max(0.1, current * 2)), 2)
    if target <= current:
        return None
    return make_remedy(
        "more_dropout",
        f"More dropout: lora_dropout {current:g} to {target:g}",
        {"lora.lora_dropout": target},
        FRESH,
    )


def more_data(session: Session, train_rows: Optional[int] = None) -> Remedy:
    rows = f" ({train_rows} training rows now)" if train_rows else ""
    return make_remedy(
        "more_data",
        f"Add more varied rows to {session.dataset.path}{rows}: the model is memorising them",
        {},
        None,
    )


