"""Remedies: concrete changes to a session that fix what the diagnostics found.

A remedy is a plain dict, so it travels inside `finding` events in `events.jsonl`:

    {"id": "lower_learning_rate", "label": "Lower the learning rate to 4e-05",
     "changes": {"training.learning_rate": 4e-05}, "restart": "fresh"}

`changes` maps dotted session paths to new values. `restart` says how the run continues once the
change is saved: "resume" (from the last checkpoint; the change does not disturb what the
checkpoint holds), "fresh" (start over: the change alters weight shapes, or state the checkpoint
would override), or None for advice that changes nothing (add data, look at a rendered example).
OOM remedies also carry `estimate_gb`, the planner's estimate of peak memory after the change.

`apply_remedy` returns a new, validated `Session`; the caller saves it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import ValidationError

from engine.errors import SessionError
from engine.session import Session, session_from_dict

Remedy = dict[str, Any]

RESUME = "resume"
FRESH = "fresh"

# LoRA learns at roughly 1e-4 to 3e-4; full fine-tuning an order of magnitude lower.
TYPICAL_LR = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}
MAX_RANK = 256
# The auto-retry skips a remedy the planner expects to save less than this share of peak memory.
MIN_SAVING = 0.03


# -- applying --------------------------------------------------------------------------------------

def apply_remedy(session: Session, remedy: Remedy) -> Session:
    """The session with the remedy's changes, validated; raises `SessionError` naming the field."""
    changes = remedy.get("changes") or {}
    data = session.to_dict()
    for dotted, value in changes.items():
        _set_dotted(data, dotted, value, remedy.get("id", "remedy"))
    try:
        return Session.model_validate(data)
    except ValidationError:
        # session_from_dict turns the first error into one sentence naming the field.
        return session_from_dict(data, where=f"remedy {remedy.get('id', '?')!r}")


def _set_dotted(data: dict, dotted: str, value: Any, remedy_id: str) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise SessionError(f"remedy {remedy_id!r} changes {dotted}, which is not a field of the session.")
        node = node[part]
    if parts[-1] not in node:
        raise SessionError(f"remedy {remedy_id!r} changes {dotted}, which is not a field of the session.")
    node[parts[-1]] = value


def as_session(session: "Session | dict") -> Session:
    return session if isinstance(session, Session) else session_from_dict(session)


# -- formatting ------------------------------------------------------------------------------------

def fmt_lr(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-") if value < 1e-3 else f"{value:g}"


def round_sig(value: float, digits: int = 2) -> float:
    """2e-4 stays 2e-4, 6.666e-5 becomes 6.7e-5: values a person would type."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def _remedy(id: str, label: str, changes: dict, restart: Optional[str], **extra: Any) -> Remedy:
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
    return _remedy(
        "raise_learning_rate",
        f"Raise the learning rate from {fmt_lr(current)} to {fmt_lr(target)}{seen}",
        {"training.learning_rate": target},
        FRESH,
    )


def lower_learning_rate(session: Session, factor: float = 0.25) -> Remedy:
    current = session.training.learning_rate
    target = round_sig(current * factor)
    return _remedy(
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
    return _remedy(
        "raise_rank",
        f"Raise the LoRA rank from {session.lora.r} to {r} (lora_alpha {alpha})",
        {"lora.r": r, "lora.lora_alpha": alpha},
        FRESH,
    )


def check_data(session: Session, example: Optional[str] = None) -> Remedy:
    extra = {"example": example} if example else {}
    return _remedy(
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
    return _remedy(
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
    return _remedy(
        "clip_gradients",
        f"Clip gradients harder: max_grad_norm {current:g} to {target:g}",
        {"training.max_grad_norm": target},
        RESUME,
    )


def check_precision(session: Session) -> Remedy:
    return _remedy(
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
    return _remedy(
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
    return _remedy(
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
    return _remedy(
        "more_dropout",
        f"More dropout: lora_dropout {current:g} to {target:g}",
        {"lora.lora_dropout": target},
        FRESH,
    )


def more_data(session: Session, train_rows: Optional[int] = None) -> Remedy:
    rows = f" ({train_rows} training rows now)" if train_rows else ""
    return _remedy(
        "more_data",
        f"Add more varied rows to {session.dataset.path}{rows}: the model is memorising them",
        {},
        None,
    )


# -- out of memory ---------------------------------------------------------------------------------

def oom_remedies(session: "Session | dict") -> list[Remedy]:
    """What lowers peak memory, cheapest first (what it costs in speed or quality), each with the
    planner's estimate for the new setting where the planner can give one."""
    session = as_session(session)
    training = session.training
    remedies: list[Remedy] = []

    if training.gradient_checkpointing is False:
        # Unsloth's offloaded checkpointing costs least; the peft backend takes a plain True.
        value: Any = True if session.backend == "peft" else "unsloth"
        remedies.append(_remedy(
            "gradient_checkpointing",
            "Turn gradient checkpointing on (about 20% slower, far less activation memory)",
            {"training.gradient_checkpointing": value},
            RESUME,
        ))

    if training.per_device_train_batch_size > 1:
        batch = training.per_device_train_batch_size // 2
        accumulation = training.gradient_accumulation_steps * (training.per_device_train_batch_size // batch)
        before, after = session.effective_batch_size, batch * accumulation
        kept = f"effective batch stays {after}" if after == before else f"effective batch {after}, was {before}"
        # Same effective batch, hence the same optimizer steps: a checkpoint stays valid.
        remedies.append(_remedy(
            "halve_batch",
            f"Halve the batch to {batch} and double accumulation to {accumulation} ({kept})",
            {"training.per_device_train_batch_size": batch, "training.gradient_accumulation_steps": accumulation},
            RESUME,
        ))

    if session.method != "qlora":
        # A different base precision: start over rather than mix a 16-bit checkpoint into 4-bit.
        remedies.append(_remedy(
            "qlora",
            "Load the base model in 4-bit (method qlora)" + (" with a LoRA adapter" if session.method == "full" else ""),
            {"method": "qlora"},
            FRESH,
        ))

    seq = session.model.max_seq_length
    if seq > 128:
        shorter = max(128, (seq // 2) // 64 * 64)
        remedies.append(_remedy(
            "shorter_sequences",
            f"Shorten max_seq_length from {seq} to {shorter} (longer rows are cut)",
            {"model.max_seq_length": shorter},
            RESUME,
        ))

    for remedy in remedies:
        estimate = estimate_peak_gb(apply_remedy(session, remedy))
        remedy["estimate_gb"] = estimate
        if estimate is not None:
            remedy["label"] += f"; estimated peak {estimate:.1f} GiB"
    return remedies


def cheapest_oom_remedy(session: "Session | dict") -> Optional[Remedy]:
    """For the headless auto-retry: the cheapest OOM remedy that the planner expects to lower peak
    memory (a retry spent on a change that saves nothing is a retry lost), or None when nothing is
    left to try. Without estimates, simply the cheapest."""
    session = as_session(session)
    remedies = oom_remedies(session)
    current = estimate_peak_gb(session)
    for remedy in remedies:
        estimate = remedy.get("estimate_gb")
        if current is None or estimate is None or estimate < current * (1 - MIN_SAVING):
            return remedy
    return remedies[0] if remedies else None


def estimate_peak_gb(session: Session) -> Optional[float]:
    """The planner's peak-memory estimate for this session in GiB, or None when the planner (or the
    model's config) is not available: a remedy is still worth offering without a number."""
    try:
        from engine.architecture import inspect_model  # the planner's modules, imported lazily
        from engine.memory import estimate_memory
    except ImportError:
        return None
    try:
        info = inspect_model(session.model.name, trust_remote_code=session.model.trust_remote_code)
        estimate = estimate_memory(
            info,
            session.method,
            r=session.lora.r,
            target_modules=session.lora.target_modules,
            batch_size=session.training.per_device_train_batch_size,
            seq_len=session.model.max_seq_length,
            gradient_checkpointing=session.training.gradient_checkpointing,
            optim=session.training.optim,
            device="cuda",  # out-of-memory is a GPU failure
            loss_kernel="eager" if session.backend == "peft" else "fused",
        )
    except Exception:  # a model the planner cannot read: the remedy stands without a number
        return None
    return round(float(estimate.total_gb), 2)
