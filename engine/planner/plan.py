"""`lora-tui plan`: memory estimates for full / LoRA / QLoRA and the recommendation, with no weights.

`build_plan` returns the `plan --json` contract of DESIGN.md (plus a few extras); `format_plan`
renders it as a table for people; `plan_command` is the command line.
"""

from __future__ import annotations

import argparse
import json

from engine.errors import UserError
from engine.planner.architecture import inspect_model
from engine.planner.hardware import HardwareProfile, load_gpu_catalogue, planned_hardware, probe_hardware
from engine.planner.memory import BACKENDS, COMPONENTS, METHODS, estimate_by_backend
from engine.planner.memory_terms import planned_backend
from engine.planner.recommend import DEFAULT_R, HEADROOM, OPTIM, RAM_HEADROOM, recommend
from engine.planner.target_modules import count_trainable_params

GRADIENT_ACCUMULATION_STEPS = 4
METHOD_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def build_plan(
    model: str,
    *,
    vram_gb: float | None = None,
    gpu: str | None = None,
    seq_len: int = 512,
    batch: int = 4,
    hardware: HardwareProfile | None = None,
    gradient_accumulation_steps: int = GRADIENT_ACCUMULATION_STEPS,
    trust_remote_code: bool = False,
    backend: str = "auto",
    rank: int | None = None,
) -> dict:
    """The plan for `model` on the GPU named by `gpu` / sized by `vram_gb`, else on `hardware`
    (else on this machine), for `backend` ("auto" is planned as Unsloth, peft checked too) at LoRA
    rank `rank` (default: the recommendation's). Bad input raises UserError with one sentence."""
    for label, value in (("--seq-len", seq_len), ("--batch", batch), ("--rank", DEFAULT_R if rank is None else rank)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive whole number, not {value!r}.")
    if backend not in ("auto", *BACKENDS):
        raise UserError(f'--backend must be "unsloth" or "peft" (or "auto"), not {backend!r}.')
    planned = planned_backend(backend)
    if gpu is not None or vram_gb is not None:
        profile = planned_hardware(gpu=gpu, vram_gb=vram_gb, base=hardware)
    else:
        profile = hardware if hardware is not None else probe_hardware()
    info = inspect_model(model, trust_remote_code=trust_remote_code)

    if profile.cpu_only:
        device = "cpu"
        ram = profile.ram_available_gb or profile.ram_total_gb or None
        budget = ram * RAM_HEADROOM if ram else None
        rec = recommend(info, None, seq_len=seq_len, batch_size=batch, backend=backend, r=rank or DEFAULT_R,
                        gradient_accumulation_steps=gradient_accumulation_steps, ram_gb=ram)
    else:
        device = "cuda"
        budget = profile.vram_gb * HEADROOM
        rec = recommend(info, profile.vram_gb, seq_len=seq_len, batch_size=batch, backend=backend,
                        r=rank or DEFAULT_R, gradient_accumulation_steps=gradient_accumulation_steps)

    r = rank or rec.r or DEFAULT_R
    checkpointing = "unsloth" if planned == "unsloth" else True
    estimates = {}
    for method in METHODS:
        # "unsloth" checkpointing: Unsloth's offloaded mode there, plain checkpointing on the peft backend.
        both = estimate_by_backend(info, method, r=r, target_modules=info.presets["recommended"], batch_size=batch,
                                   seq_len=seq_len, gradient_checkpointing="unsloth", optim=OPTIM, device=device)
        estimate = both[planned]
        estimates[method] = {
            "total_gb": estimate.total_gb,
            "components": dict(estimate.components),
            "fits": _fits(estimate.total_gb, budget),
            "trainable_params": estimate.trainable_params,
            "by_backend": {name: {"total_gb": e.total_gb, "fits": _fits(e.total_gb, budget)} for name, e in both.items()},
        }

    notes = list(rec.notes)
    if info.context_length and seq_len > info.context_length:
        notes.append(f"--seq-len {seq_len} is longer than the model's context length of {info.context_length:,} tokens.")
    if info.num_experts:
        notes.append(
            f"Mixture of experts ({info.num_experts} experts, {info.experts_per_token} a token): the experts are "
            "fused parameters, not nn.Linear, so LoRA targets the attention projections and the estimate keeps "
            "the experts in 16 bit for QLoRA."
        )
    if not profile.cpu_only and not profile.gpus[0].bf16:
        notes.append(f"{profile.gpus[0].name} has no bfloat16: training runs in float16 (same memory, less stable).")
    return {
        "model": {
            "name": info.name,
            "params": info.params,
            "architecture": info.architecture,
            "model_type": info.model_type,
            "num_layers": info.num_layers,
            "hidden_size": info.hidden_size,
            "intermediate_size": info.intermediate_size,
            "vocab_size": info.vocab_size,
            "context_length": info.context_length,
            "tie_word_embeddings": info.tie_word_embeddings,
            "source": info.source,
        },
        "hardware": {
            "summary": profile.summary(),
            "source": profile.source,
            "device": device,
            "gpu": profile.gpus[0].name if profile.gpus else None,
            "vram_gb": profile.vram_gb,
            "ram_available_gb": profile.ram_available_gb,
            "budget_gb": round(budget, 2) if budget is not None else None,
        },
        "settings": {
            "seq_len": seq_len,
            "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "gradient_checkpointing": checkpointing,
            "optim": OPTIM,
            "r": r,
            "backend": planned,
            "backend_option": backend,
        },
        "target_modules": {
            "available": list(info.linear_modules),
            "recommended": list(info.presets["recommended"]),
            "presets": {name: list(modules) for name, modules in info.presets.items()},
        },
        "trainable_params": count_trainable_params(info, info.presets["recommended"], r),
        "estimates": estimates,
        "recommendation": {
            "method": rec.method,
            "r": rec.r,
            "lora_alpha": rec.lora_alpha,
            "per_device_train_batch_size": rec.per_device_train_batch_size,
            "gradient_accumulation_steps": rec.gradient_accumulation_steps,
            "gradient_checkpointing": rec.gradient_checkpointing,
            "target_modules": list(rec.target_modules),
            "reason": rec.reason,
            "estimate_gb": rec.estimate.total_gb if rec.estimate else None,
            "higher_capacity_fits": rec.higher_capacity_fits,
            "backend": rec.backend,
            "planned_backend": rec.planned_backend,
            "by_backend": dict(rec.by_backend),
        },
        "notes": notes,
        "warnings": _warnings(rec, estimates, planned, budget, batch, seq_len, device),
    }


def _fits(total_gb: float, budget: float | None) -> bool:
    return budget is None or total_gb <= budget


def _warnings(rec, estimates: dict, planned: str, budget, batch: int, seq_len: int, device: str) -> list[str]:
    """What would run out of memory: said before a run, not found by one."""
    if budget is None:
        return []
    other = "peft" if planned == "unsloth" else "unsloth"
    shape = f"batch {batch} x {seq_len:,} tokens"
    where = "RAM" if device == "cpu" else "GPU"
    warnings = []
    if rec.method is None:
        leanest = rec.by_backend.get(planned, rec.estimate.total_gb if rec.estimate else 0.0)
        text = (
            f"On the {planned} backend a run at {shape} would run out of memory: even QLoRA at batch 1 needs about "
            f"{leanest:.1f} GB, over the {budget:g} GB budget"
        )
        lean_other = rec.by_backend.get(other)
        if lean_other is not None and lean_other <= budget:
            text += f"; on the {other} backend it needs about {lean_other:.1f} GB (--backend {other})"
        warnings.append(text + ".")
    else:
        over = [m for m in METHODS if not estimates[m]["fits"]]
        rescued = [m for m in over if estimates[m]["by_backend"][other]["fits"]]
        if rescued and planned == "peft":
            names = " and ".join(METHOD_NAMES[m] for m in rescued)
            warnings.append(
                f"On the peft backend {names} at {shape} would run out of {where} memory; "
                f"with --backend unsloth (Unsloth's kernels) {'it fits' if len(rescued) == 1 else 'they fit'}."
            )
    if rec.backend == "unsloth":
        warnings.append(
            f"The peft backend would run out of memory on the recommended plan (about {rec.by_backend['peft']:.1f} GB "
            f"of a {budget:g} GB budget): run it with the unsloth backend (a session made from this plan pins it)."
        )
    return warnings


def format_plan(plan: dict) -> str:
    """The plan as a table a person reads in a terminal."""
    model, hardware, settings = plan["model"], plan["hardware"], plan["settings"]
    rec, estimates = plan["recommendation"], plan["estimates"]
    lines = [
        f"Model     {model['name']}",
        f"          {model['architecture']}, {_count(model['params'])} parameters, {model['num_layers']} layers, "
        f"hidden {model['hidden_size']:,}, vocabulary {model['vocab_size']:,}"
        + (f", context {model['context_length']:,}" if model.get("context_length") else ""),
        f"Hardware  {hardware['summary']}",
        f"Settings  batch {settings['per_device_train_batch_size']} x {settings['seq_len']} tokens, "
        f"gradient checkpointing{_offloaded(settings, hardware)}, {settings['optim']}"
        + (" (torch AdamW on a CPU)" if hardware["device"] == "cpu" else "")
        + f", LoRA r {settings['r']} on the recommended modules",
        f"Backend   {settings['backend']}"
        + (" (auto: Unsloth where it imports; the peft backend is checked too)" if settings.get("backend_option") == "auto" else ""),
        "",
    ]
    where = "RAM" if hardware["device"] == "cpu" else "GPU memory"
    header = f"{'Estimated peak (GB)':<22}" + "".join(f"{METHOD_NAMES[m]:>18}" for m in METHODS)
    lines += [header, "-" * len(header)]
    for part in COMPONENTS:
        cells = "".join(f"{_gb(estimates[m]['components'].get(part, 0.0)):>18}" for m in METHODS)
        lines.append(f"{part:<22}{cells}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<22}" + "".join(f"{estimates[m]['total_gb']:>18.2f}" for m in METHODS))
    budget = hardware.get("budget_gb")
    label = f"fits in {budget:g} GB" if budget is not None else "fits"
    lines.append(f"{label:<22}" + "".join(f"{'yes' if estimates[m]['fits'] else 'no':>18}" for m in METHODS))
    for other in BACKENDS:
        if other != settings["backend"]:
            cells = []
            for m in METHODS:
                theirs = estimates[m]["by_backend"][other]
                cells.append(f"{theirs['total_gb']:.2f}" + ("" if theirs["fits"] or budget is None else " (no)"))
            lines.append(f"{'total on ' + other:<22}" + "".join(f"{cell:>18}" for cell in cells))
    if budget is not None:
        share = int(round(100 * (HEADROOM if hardware["device"] != "cpu" else RAM_HEADROOM)))
        room = "the system and the data pipeline" if hardware["device"] == "cpu" else "allocator spikes"
        lines.append(f"({share}% of the {where}, leaving room for {room})")
    lines.append("")

    modules = plan["target_modules"]
    presets = modules["presets"]
    extra = [name for name in presets["maximum"] if name not in presets["recommended"]]
    lines.append(f"Target modules  {', '.join(modules['recommended'])} (recommended)")
    lines.append(f"                minimal: {', '.join(presets['minimal'])}; maximum adds {', '.join(extra) or 'nothing'}")
    share = 100 * plan["trainable_params"] / model["params"] if model["params"] else 0.0
    lines.append(f"Trainable       {plan['trainable_params']:,} parameters ({share:.2f}%) at r {rec['r'] or settings['r']}")
    lines.append("")
    if rec["method"] is None:
        lines.append("Recommendation  nothing fits")
    else:
        what = METHOD_NAMES[rec["method"]]
        if rec["method"] != "full":
            what += f", r {rec['r']}, lora_alpha {rec['lora_alpha']}"
        what += (
            f", batch {rec['per_device_train_batch_size']} x {rec['gradient_accumulation_steps']} accumulation, "
            f"gradient checkpointing {'on' if rec['gradient_checkpointing'] else 'off'}"
        )
        lines.append(f"Recommendation  {what}")
    lines.append(f"                {rec['reason']}")
    for note in plan.get("notes", []):
        lines.append(f"Note            {note}")
    for warning in plan.get("warnings", []):
        lines.append(f"Warning         {warning}")
    return "\n".join(lines)


def _offloaded(settings: dict, hardware: dict) -> str:
    if settings["backend"] == "unsloth" and hardware["device"] != "cpu":
        return " (Unsloth's, offloaded to RAM)"
    return ""


def _gb(value: float) -> str:
    return "-" if not value else f"{value:.2f}"


def _count(params: int) -> str:
    if params >= 1e9:
        return f"{params / 1e9:.2f}B"
    return f"{params / 1e6:.1f}M"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (UserError, exit 2) instead of usage + message."""

    def error(self, message: str):
        raise UserError(f"plan: {message} (see `lora-tui plan --help`).")


def _parser() -> argparse.ArgumentParser:
    try:
        names = ", ".join(spec.name for spec in load_gpu_catalogue())
    except Exception:
        names = "see presets/gpus.json"
    parser = _Parser(
        prog="lora-tui plan",
        description="Estimate peak memory of full fine-tuning, LoRA and QLoRA for a model, and recommend "
        "the method, rank, batch and gradient checkpointing that fit. No weights are loaded.",
        epilog=f"GPUs for --gpu: {names}.",
    )
    parser.add_argument("--model", required=True, help="hub id, model folder or config.json path")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--vram", type=float, metavar="GB", help="plan for a GPU with this much memory")
    where.add_argument("--gpu", metavar="NAME", help='plan for a GPU from the catalogue, e.g. "RTX 4090"')
    parser.add_argument("--seq-len", type=int, default=512, metavar="N", help="max_seq_length (default 512)")
    parser.add_argument("--batch", type=int, default=4, metavar="N", help="per_device_train_batch_size (default 4)")
    parser.add_argument("--backend", choices=("unsloth", "peft", "auto"), default="auto",
                        help="whose memory to estimate: unsloth or peft (default auto: Unsloth, with peft checked)")
    parser.add_argument("--rank", type=int, metavar="N", help="LoRA rank r (default: the recommendation's, 16)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    return parser


def plan_command(argv: list[str]) -> int:
    """`lora-tui plan ...`. UserError propagates to tui/cli.py, which prints one line and exits 2."""
    args = _parser().parse_args(argv)
    plan = build_plan(
        args.model, vram_gb=args.vram, gpu=args.gpu, seq_len=args.seq_len, batch=args.batch,
        trust_remote_code=args.trust_remote_code, backend=args.backend, rank=args.rank,
    )
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0
