"""The out-of-memory path, in one place.

The worker recognises the error (`is_oom`) and reports it (`report`: a finding with remedies and an
error event); the supervisor retries with `cheapest_remedy`, the cheapest change the planner expects
to lower peak memory, at most `MAX_RETRIES` times; the dashboard offers `remedies_for` as keys.
`InjectedOOM` is the one test seam: a real `torch.OutOfMemoryError` raised at a chosen step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from engine.troubleshooting.remedies import FRESH, RESUME, Remedy, apply_remedy, as_session, make_remedy

if TYPE_CHECKING:
    from engine.session.schema import Session

MAX_RETRIES = 3
# A retry is spent only on a change the planner expects to save at least this share of peak memory.
MIN_SAVING = 0.03
INJECT_VARIABLE = "LORA_TUI_INJECT_OOM"


def is_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError that says "out of memory" (older kernels, bitsandbytes)."""
    import torch  # only the worker calls this, and it has torch loaded already

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def report(run_dir: Path, events, message: str, step: Optional[int]) -> None:
    """In the worker: the finding (with remedies) and the error event for an out-of-memory failure."""
    from engine.session.schema import load_session

    found = finding(load_session(Path(run_dir) / "session.json"), step, message)
    events.emit("finding", **{k: v for k, v in found.items() if k not in ("event", "time")})
    at = f"at step {step}" if step else "before the first step"
    events.emit("error", kind="oom", step=step, message=f"Out of memory {at}: {message}")


def finding(session: Session | dict, step: Optional[int], message: str) -> dict:
    """The finding the worker writes when it catches `torch.OutOfMemoryError`."""
    s = as_session(session)
    remedies = remedies_for(s)
    current = estimate_peak_gb(s)
    first_line = ((message or "").strip().splitlines() or ["out of memory"])[0][:200].rstrip(".")
    at = f"at step {step}" if step is not None else "before the first step"
    estimate = f" The planner estimated {current:.1f} GiB for this setting." if current is not None else ""
    text = (
        f"Out of memory {at}: {first_line}.{estimate} "
        + ("The remedies below are ordered by what they cost, cheapest first." if remedies
           else "Nothing cheaper is left to try: use a smaller model or a bigger GPU.")
    )
    evidence = {
        "step": step, "estimate_gb": current,
        "per_device_train_batch_size": s.training.per_device_train_batch_size,
        "gradient_accumulation_steps": s.training.gradient_accumulation_steps,
        "max_seq_length": s.model.max_seq_length, "method": s.method,
        "gradient_checkpointing": s.training.gradient_checkpointing,
    }
    return {"event": "finding", "step": step, "kind": "oom", "message": text, "evidence": evidence, "remedies": remedies}


def remedies_for(session: Session | dict) -> list[Remedy]:
    """What lowers peak memory, cheapest first (what it costs in speed or quality), each with the
    planner's estimate for the new setting where the planner can give one."""
    session = as_session(session)
    training = session.training
    remedies: list[Remedy] = []

    if training.gradient_checkpointing is False:
        # Unsloth's offloaded checkpointing costs least; the peft backend takes a plain True.
        value: Any = True if session.backend == "peft" else "unsloth"
        remedies.append(make_remedy(
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
        remedies.append(make_remedy(
            "halve_batch",
            f"Halve the batch to {batch} and double accumulation to {accumulation} ({kept})",
            {"training.per_device_train_batch_size": batch, "training.gradient_accumulation_steps": accumulation},
            RESUME,
        ))

    if session.method != "qlora":
        # A different base precision: start over rather than mix a 16-bit checkpoint into 4-bit.
        remedies.append(make_remedy(
            "qlora",
            "Load the base model in 4-bit (method qlora)" + (" with a LoRA adapter" if session.method == "full" else ""),
            {"method": "qlora"},
            FRESH,
        ))

    seq = session.model.max_seq_length
    if seq > 128:
        shorter = max(128, (seq // 2) // 64 * 64)
        remedies.append(make_remedy(
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


def cheapest_remedy(session: Session | dict) -> Optional[Remedy]:
    """For the headless auto-retry: the cheapest OOM remedy that the planner expects to lower peak
    memory (a retry spent on a change that saves nothing is a retry lost), or None when nothing is
    left to try. Without estimates, simply the cheapest."""
    session = as_session(session)
    remedies = remedies_for(session)
    current = estimate_peak_gb(session)
    for remedy in remedies:
        estimate = remedy.get("estimate_gb")
        if current is None or estimate is None or estimate < current * (1 - MIN_SAVING):
            return remedy
    return remedies[0] if remedies else None


def estimate_peak_gb(session: Session) -> Optional[float]:
    """The planner's peak-memory estimate for this session in GiB, or None when the planner (or the
    model's config) is not available: a remedy is still worth offering without a number."""
    from engine.planner.architecture import inspect_model  # torch on first use: the supervisor stays light
    from engine.planner.memory import estimate_for_session

    try:
        info = inspect_model(session.model.name, trust_remote_code=session.model.trust_remote_code)
        # Out of memory is a GPU failure; the session's backend ("auto" is planned as Unsloth).
        estimate = estimate_for_session(info, session, device="cuda")
    except Exception:  # a model the planner cannot read: the remedy stands without a number
        return None
    return round(float(estimate.total_gb), 2)


class InjectedOOM:
    """Test seam for the OOM path: LORA_TUI_INJECT_OOM="step=3,min_batch=4" raises the real
    torch.OutOfMemoryError at step 3 while per_device_train_batch_size is at least 4."""

    @classmethod
    def from_environment(cls, batch_size: int) -> InjectedOOM:
        return cls(os.environ.get(INJECT_VARIABLE), batch_size)

    def __init__(self, spec: str | None, batch_size: int):
        self.step = None
        if spec:
            fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
            if int(fields.get("min_batch", 0)) <= batch_size:
                self.step = int(fields.get("step", 1))

    def check(self, step: int) -> None:
        if self.step is not None and step >= self.step:
            import torch

            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by LORA_TUI_INJECT_OOM at step {step})"
            )
