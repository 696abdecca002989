"""Which method, rank, batch and checkpointing fit this model on this GPU (or CPU), and why.

The order of preference is full fine-tuning > LoRA > QLoRA: the first that fits within
HEADROOM of the memory wins. Within a method the planner first drops gradient checkpointing
(faster when memory allows), then halves the batch while raising gradient accumulation so the
effective batch stays what the person asked for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from engine.errors import UserError
from engine.planner.architecture import ModelInfo
from engine.planner.memory import MemoryEstimate, estimate_memory

# Plan to use at most 90% of the memory: allocator spikes and other processes need the rest.
HEADROOM = 0.9
# On a CPU the operating system and the data pipeline share the RAM.
RAM_HEADROOM = 0.8
DEFAULT_R = 16
HIGH_CAPACITY_R = 64  # the seed's "higher capacity" preset
OPTIM = "adamw_8bit"
PREFERENCE = ("full", "lora", "qlora")
SLOW_ON_CPU_PARAMS = 2e9


@dataclass
class Recommendation:
    method: str | None
    r: int | None
    lora_alpha: int | None
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    target_modules: list[str]
    reason: str
    estimate: MemoryEstimate | None = None
    device: str = "cuda"
    budget_gb: float | None = None
    # Rank 64 (the higher-capacity preset) would fit with the same batch and checkpointing.
    higher_capacity_fits: bool = False
    # "unsloth" when the plan fits only with Unsloth's kernels (offloaded checkpoints, fused loss);
    # None when it fits either backend.
    backend: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["estimate"] = self.estimate.to_dict() if self.estimate else None
        return data


def recommend(
    info: ModelInfo,
    vram_gb: float | None,
    *,
    seq_len: int = 512,
    batch_size: int = 4,
    gradient_accumulation_steps: int = 4,
    ram_gb: float | None = None,
) -> Recommendation:
    """The best plan for `info` on a GPU with `vram_gb` GiB, or on the CPU when `vram_gb` is None.

    On the CPU `ram_gb` (available RAM) is the budget when given.
    """
    for label, value in (
        ("--seq-len", seq_len),
        ("--batch", batch_size),
        ("gradient_accumulation_steps", gradient_accumulation_steps),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive whole number, not {value!r}.")
    if vram_gb is not None and (isinstance(vram_gb, bool) or not isinstance(vram_gb, (int, float)) or not vram_gb > 0):
        raise UserError(f"--vram must be a positive number of GB, not {vram_gb!r}.")
    effective = batch_size * gradient_accumulation_steps
    if vram_gb is None:
        return _recommend_cpu(info, seq_len, batch_size, effective, ram_gb)
    return _recommend_gpu(info, float(vram_gb), seq_len, batch_size, effective)


def _candidates(batch_size: int, effective: int):
    """(batch, accumulation, checkpointing) from fastest to leanest, keeping the effective batch."""
    yield batch_size, max(1, math.ceil(effective / batch_size)), False
    batch = batch_size
    while True:
        yield batch, max(1, math.ceil(effective / batch)), True
        if batch == 1:
            break
        batch = max(1, batch // 2)


def _estimate(info, method, batch, seq_len, checkpointing, device, r=DEFAULT_R, kernels="peft") -> MemoryEstimate:
    unsloth = kernels == "unsloth"
    return estimate_memory(
        info, method, r=r, target_modules=None, batch_size=batch, seq_len=seq_len,
        gradient_checkpointing="unsloth" if (unsloth and checkpointing) else checkpointing, optim=OPTIM,
        device=device, loss_kernel="fused" if unsloth else "eager",
    )


def _first_fit(info, method, seq_len, batch_size, effective, budget, device, kernels="peft"):
    for batch, accumulation, checkpointing in _candidates(batch_size, effective):
        if kernels == "unsloth" and not checkpointing:
            continue  # the lean kernels are the last resort: with checkpointing only
        estimate = _estimate(info, method, batch, seq_len, checkpointing, device, kernels=kernels)
        if estimate.total_gb <= budget:
            return batch, accumulation, checkpointing, estimate
    return None


def _recommend_gpu(info: ModelInfo, vram_gb: float, seq_len: int, batch_size: int, effective: int) -> Recommendation:
    budget = vram_gb * HEADROOM
    for method in PREFERENCE:
        fit = _first_fit(info, method, seq_len, batch_size, effective, budget, "cuda")
        if fit is None:
            continue
        batch, accumulation, checkpointing, estimate = fit
        rec = _build(info, method, batch, accumulation, checkpointing, estimate, "cuda", budget)
        rec.reason = _gpu_reason(info, rec, vram_gb, seq_len, batch_size, effective)
        return rec
    # Nothing fits the plain transformers + PEFT path: Unsloth's kernels may still make it fit.
    for method in ("lora", "qlora"):
        fit = _first_fit(info, method, seq_len, batch_size, effective, budget, "cuda", kernels="unsloth")
        if fit is None:
            continue
        batch, accumulation, checkpointing, estimate = fit
        rec = _build(info, method, batch, accumulation, checkpointing, estimate, "cuda", budget)
        rec.backend = "unsloth"
        rec.higher_capacity_fits = False
        plain = _estimate(info, method, batch, seq_len, True, "cuda")
        names = {"lora": "LoRA", "qlora": "QLoRA (4-bit base)"}
        batch_note = ""
        if batch != batch_size:
            batch_note = f"; batch {batch} x {accumulation} accumulation keeps the effective batch of {effective}"
        rec.reason = (
            f"{names[method]} fits only with Unsloth's kernels (checkpoints offloaded to RAM, fused loss): "
            f"about {estimate.total_gb:.1f} of {_size(vram_gb)} GB, against {plain.total_gb:.1f} GB on the peft "
            f"backend{batch_note}; rank {rec.r}."
        )
        return rec
    return _nothing_fits(info, vram_gb, budget, seq_len, batch_size, effective)


def _build(info, method, batch, accumulation, checkpointing, estimate, device, budget) -> Recommendation:
    lora = method in ("lora", "qlora")
    rec = Recommendation(
        method=method,
        r=DEFAULT_R if lora else None,
        lora_alpha=2 * DEFAULT_R if lora else None,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        gradient_checkpointing=checkpointing,
        target_modules=list(info.presets["recommended"]) if lora else [],
        reason="",
        estimate=estimate,
        device=device,
        budget_gb=round(budget, 2) if budget is not None else None,
    )
    if lora:
        bigger = _estimate(info, method, batch, estimate.seq_len, checkpointing, device, r=HIGH_CAPACITY_R)
        rec.higher_capacity_fits = budget is None or bigger.total_gb <= budget
    return rec


def _gpu_reason(info, rec: Recommendation, vram_gb, seq_len, batch_size, effective) -> str:
    estimate = rec.estimate
    names = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base)"}
    text = f"{names[rec.method]} fits: about {estimate.total_gb:.1f} of {_size(vram_gb)} GB"
    if rec.method == "lora":
        full = _estimate(info, "full", 1, seq_len, True, "cuda")
        text += f" (full fine-tuning would need about {full.total_gb:.0f} GB)"
    elif rec.method == "qlora":
        lora = _estimate(info, "lora", 1, seq_len, True, "cuda")
        text += f" (16-bit LoRA would need about {lora.total_gb:.0f} GB)"
    changes = []
    if rec.per_device_train_batch_size != batch_size:
        changes.append(
            f"batch {rec.per_device_train_batch_size} x {rec.gradient_accumulation_steps} accumulation "
            f"keeps the effective batch of {effective}"
        )
    if rec.gradient_checkpointing:
        changes.append("gradient checkpointing is needed")
    if changes:
        text += "; " + " and ".join(changes)
    if rec.method in ("lora", "qlora"):
        text += f"; rank {rec.r}" + (f" (rank {HIGH_CAPACITY_R} would fit too)" if rec.higher_capacity_fits else "")
    return text + "."


def _size(gb: float) -> str:
    return f"{round(gb, 1):g}"


def _nothing_fits(info, vram_gb, budget, seq_len, batch_size, effective) -> Recommendation:
    leanest = _estimate(info, "qlora", 1, seq_len, True, "cuda", kernels="unsloth")
    suggestions = []
    shorter = seq_len // 2
    while shorter >= 128:
        if _estimate(info, "qlora", 1, shorter, True, "cuda", kernels="unsloth").total_gb <= budget:
            suggestions.append(f"max_seq_length {shorter}")
            break
        shorter //= 2
    needed = math.ceil(leanest.total_gb / HEADROOM)
    suggestions.append(f"a GPU with at least {needed} GB")
    fixed = leanest.total_gb - leanest.components["activations"] - leanest.components["logits"]
    if fixed > 0:
        scale = (budget - (leanest.total_gb - fixed)) / fixed
        if scale > 0.05:
            suggestions.append(f"a model under about {info.params * scale / 1e9:.1f}B parameters")
    reason = (
        f"Nothing fits in {_size(vram_gb)} GB: even QLoRA at batch 1 with Unsloth's offloaded checkpointing needs about "
        f"{leanest.total_gb:.1f} GB; " + ", or ".join(suggestions) + " would fit."
    )
    return Recommendation(
        method=None, r=None, lora_alpha=None, per_device_train_batch_size=1,
        gradient_accumulation_steps=effective, gradient_checkpointing=True, target_modules=[],
        reason=reason, estimate=leanest, device="cuda", budget_gb=round(budget, 2),
    )


def _recommend_cpu(info: ModelInfo, seq_len: int, batch_size: int, effective: int, ram_gb: float | None) -> Recommendation:
    budget = ram_gb * RAM_HEADROOM if ram_gb else None
    slow = (
        f" A model of {info.params / 1e9:.1f}B parameters trains very slowly on a CPU; a GPU is worth it."
        if info.params >= SLOW_ON_CPU_PARAMS
        else ""
    )
    why = "No GPU: LoRA on the CPU (4-bit QLoRA saves memory but is no faster on a CPU)"
    if budget is None:
        estimate = _estimate(info, "lora", batch_size, seq_len, False, "cpu")
        rec = _build(info, "lora", batch_size, math.ceil(effective / batch_size), False, estimate, "cpu", None)
        rec.reason = f"{why}; about {estimate.total_gb:.1f} GB of RAM.{slow}"
        return rec
    fit = _first_fit(info, "lora", seq_len, batch_size, effective, budget, "cpu")
    if fit is not None:
        batch, accumulation, checkpointing, estimate = fit
        rec = _build(info, "lora", batch, accumulation, checkpointing, estimate, "cpu", budget)
        changes = ""
        if batch != batch_size:
            changes = f"; batch {batch} x {accumulation} accumulation keeps the effective batch of {effective}"
        if checkpointing:
            changes += " with gradient checkpointing"
        rec.reason = f"{why}; about {estimate.total_gb:.1f} of {ram_gb:.0f} GB RAM{changes}.{slow}"
        return rec
    leanest = _estimate(info, "qlora", 1, seq_len, True, "cpu")
    if leanest.total_gb <= budget:
        rec = _build(info, "qlora", 1, effective, True, leanest, "cpu", budget)
        rec.reason = (
            f"No GPU, and 16-bit LoRA does not fit in {ram_gb:.0f} GB RAM: QLoRA on the CPU needs about "
            f"{leanest.total_gb:.1f} GB (slow, but it fits).{slow}"
        )
        return rec
    return Recommendation(
        method=None, r=None, lora_alpha=None, per_device_train_batch_size=1,
        gradient_accumulation_steps=effective, gradient_checkpointing=True, target_modules=[],
        reason=(
            f"No GPU, and {ram_gb:.0f} GB RAM is too little: even QLoRA at batch 1 needs about "
            f"{leanest.total_gb:.1f} GB; a smaller model or a GPU would fit."
        ),
        estimate=leanest, device="cpu", budget_gb=round(budget, 2),
    )
