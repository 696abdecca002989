"""`lora-tui plan`: memory estimates for full / LoRA / QLoRA and the recommendation, with no weights.

`build_plan` returns the `plan --json` contract of DESIGN.md (plus a few extras); `format_plan`
renders it as a table for people; `plan_command` is the command line.

With `--num-gpus N` (a node) and `--nodes M` every estimate is per GPU, for the strategy the method
would use on N x M GPUs (DDP when a full copy fits each GPU, else FSDP, else FSDP with CPU
offload), each strategy's figures under `estimates.<method>.by_strategy`, and the recommendation
names its strategy (`recommendation.strategy`: "none" | "ddp" | "fsdp"). Under FSDP the loading is
planned too (`estimates.<method>.load_gb`, the GPU peak while loading, and `.load_ram_gb`, the RAM a
process holds then; `total_gb` is the larger of `train_gb` and `load_gb`): see engine.planner.distributed_terms.
"""

from __future__ import annotations

import argparse
import json
import math

from engine.errors import UserError
from engine.planner.architecture import inspect_model
from engine.planner.hardware import HardwareProfile, load_gpu_catalogue, planned_hardware, probe_hardware
from engine.planner.memory import BACKENDS, COMPONENTS, DISTRIBUTED_COMPONENTS, METHODS, estimate_by_backend
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
    num_gpus: int = 1,
    nodes: int = 1,
) -> dict:
    """The plan for `model` on the GPU named by `gpu` / sized by `vram_gb`, else on `hardware`
    (else on this machine), for `backend` ("auto" is planned as Unsloth, peft checked too) at LoRA
    rank `rank` (default: the recommendation's), on `num_gpus` such GPUs a node and `nodes` nodes.
    Bad input raises UserError with one sentence."""
    for label, value in (("--seq-len", seq_len), ("--batch", batch), ("--rank", DEFAULT_R if rank is None else rank),
                         ("--num-gpus", num_gpus), ("--nodes", nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive whole number, not {value!r}.")
    if backend not in ("auto", *BACKENDS):
        raise UserError(f'--backend must be "unsloth" or "peft" (or "auto"), not {backend!r}.')
    planned = planned_backend(backend)
    if gpu is not None or vram_gb is not None:
        profile = planned_hardware(gpu=gpu, vram_gb=vram_gb, base=hardware)
    else:
        profile = hardware if hardware is not None else probe_hardware()
    _check_gpus(profile, num_gpus, nodes)
    world = num_gpus * nodes
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
        # A planned GPU's box is not this machine: its RAM is unknown, so CPU offload is not bounded by it.
        node_ram = None if profile.source == "planned" else (profile.ram_available_gb or None)
        rec = recommend(info, profile.vram_gb, seq_len=seq_len, batch_size=batch, backend=backend,
                        r=rank or DEFAULT_R, gradient_accumulation_steps=gradient_accumulation_steps,
                        num_gpus=num_gpus, nodes=nodes, node_ram_gb=node_ram)

    r = rank or rec.r or DEFAULT_R
    # The table is for the backend the session will run: under FSDP the recommendation can pin peft
    # (Unsloth would load the whole model onto every GPU), and then peft's figures are the plan's.
    if backend == "auto" and rec.backend in BACKENDS:
        planned = rec.backend
    checkpointing = "unsloth" if planned == "unsloth" else True
    estimates = {}
    for method in METHODS:
        # "unsloth" checkpointing: Unsloth's offloaded mode there, plain checkpointing on the peft backend.
        settings = dict(r=r, target_modules=info.presets["recommended"], batch_size=batch, seq_len=seq_len,
                        gradient_checkpointing="unsloth", optim=OPTIM, device=device)
        by_strategy = {}
        for name, (strategy, offload) in (_LAYOUTS if world > 1 and device == "cuda" else {"none": ("none", False)}).items():
            both = estimate_by_backend(info, method, **settings, strategy=strategy, world_size=world if strategy != "none" else 1,
                                       cpu_offload=offload)
            by_strategy[name] = both
        # The method's figures are for the first layout that fits on either backend (the planned one's
        # figures, the other's on the "total on" row): DDP, FSDP, FSDP with CPU offload.
        chosen = next((name for name, both in by_strategy.items()
                       if any(_fits(e.total_gb, budget) for e in both.values())
                       and not (name == "fsdp_offload" and method == "full")), "fsdp" if "fsdp" in by_strategy else "none")
        both = by_strategy[chosen]
        estimate = both[planned]
        estimates[method] = {
            "total_gb": estimate.total_gb,
            "components": dict(estimate.components),
            "fits": _fits(estimate.total_gb, budget),
            "trainable_params": estimate.trainable_params,
            "by_backend": {name: {"total_gb": e.total_gb, "fits": _fits(e.total_gb, budget)} for name, e in both.items()},
            "strategy": estimate.strategy,
            "world_size": estimate.world_size,
            "per_gpu_gb": estimate.total_gb,
            "cpu_offload": estimate.cpu_offload,
        }
        if world > 1 and device == "cuda":
            estimates[method]["unsharded"] = dict(estimate.unsharded)
            estimates[method]["offloaded_gb"] = estimate.offloaded_gb
            estimates[method].update(train_gb=estimate.train_gb, load_gb=estimate.load_gb,
                                     load_ram_gb=estimate.load_ram_gb)
            estimates[method]["by_strategy"] = {
                name: {"per_gpu_gb": b[planned].total_gb, "total_gb": b[planned].total_gb, "fits": _fits(b[planned].total_gb, budget),
                       "components": dict(b[planned].components), "unsharded": dict(b[planned].unsharded),
                       "offloaded_gb": b[planned].offloaded_gb, "train_gb": b[planned].train_gb,
                       "load_gb": b[planned].load_gb, "load_ram_gb": b[planned].load_ram_gb}
                for name, b in by_strategy.items()
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
    if not profile.cpu_only and world == 1 and len(profile.gpus) > 1 and profile.source != "planned":
        notes.append(f"This machine has {len(profile.gpus)} GPUs; the plan is for one (--num-gpus {len(profile.gpus)} plans for all).")
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
            "num_gpus": num_gpus if device == "cuda" else 0,
            "nodes": nodes,
            "world_size": world if device == "cuda" else 1,
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
            "strategy": rec.strategy,
            "world_size": rec.world_size,
            "nproc_per_node": rec.nproc_per_node,
            "nnodes": rec.nnodes,
            "cpu_offload": rec.cpu_offload,
            "offloaded_gb": rec.offloaded_gb,
            "per_gpu_gb": rec.estimate.total_gb if rec.estimate and device == "cuda" else None,
            # FSDP's loading on the recommended backend: the GPU peak a process, the RAM a process.
            "load_gb": rec.estimate.load_gb if rec.estimate else 0.0,
            "load_ram_gb": rec.estimate.load_ram_gb if rec.estimate else 0.0,
        },
        "notes": notes,
        "warnings": _warnings(rec, estimates, planned, budget, batch, seq_len, device),
    }


# Layouts on several GPUs, in the order a method tries them: {name: (strategy, cpu_offload)}.
_LAYOUTS = {"ddp": ("ddp", False), "fsdp": ("fsdp", False), "fsdp_offload": ("fsdp", True)}
STRATEGY_NAMES = {"none": "one GPU", "ddp": "DDP", "fsdp": "FSDP"}


def _backend_note(settings: dict) -> str:
    if settings.get("backend_option") != "auto":
        return ""
    if settings["backend"] == "peft":
        return " (auto, pinned by the recommendation below; the unsloth backend is checked too)"
    return " (auto: Unsloth where it imports; the peft backend is checked too)"


def _check_gpus(profile: HardwareProfile, num_gpus: int, nodes: int) -> None:
    if num_gpus * nodes == 1:
        return
    if profile.cpu_only:
        raise UserError(f"--num-gpus {num_gpus} / --nodes {nodes}: this machine has no GPU; plan for one with "
                        "--gpu NAME or --vram GB.")
    if profile.source != "planned" and num_gpus > len(profile.gpus):
        raise UserError(f"--num-gpus {num_gpus}, but this machine has {len(profile.gpus)} GPU"
                        f"{'s' if len(profile.gpus) != 1 else ''}; plan for a GPU you do not have with --gpu NAME.")


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
        f"Hardware  {hardware['summary']}" + _gpus_line(hardware),
        f"Settings  batch {settings['per_device_train_batch_size']} x {settings['seq_len']} tokens, "
        f"gradient checkpointing{_offloaded(settings, hardware)}, {settings['optim']}"
        + (" (torch AdamW on a CPU)" if hardware["device"] == "cpu" else "")
        + f", LoRA r {settings['r']} on the recommended modules",
        f"Backend   {settings['backend']}" + _backend_note(settings),
        "",
    ]
    where = "RAM" if hardware["device"] == "cpu" else "GPU memory"
    world = hardware.get("world_size", 1)
    title = "Estimated peak (GB)" if world == 1 else "Peak a GPU (GB)"
    header = f"{title:<22}" + "".join(f"{METHOD_NAMES[m]:>18}" for m in METHODS)
    lines += [header, "-" * len(header)]
    if world > 1:
        lines.append(f"{'strategy':<22}" + "".join(f"{_layout(estimates[m]):>18}" for m in METHODS))
    extra = [part for part in DISTRIBUTED_COMPONENTS if any(estimates[m]["components"].get(part) for m in METHODS)]
    for part in [*COMPONENTS[:-1], *extra, COMPONENTS[-1]]:
        cells = "".join(f"{_part(estimates[m], part):>18}" for m in METHODS)
        lines.append(f"{part:<22}{cells}")
    loading = any(estimates[m].get("load_gb") or estimates[m].get("load_ram_gb") for m in METHODS)
    if loading:
        lines.append(f"{'training step':<22}" + "".join(f"{estimates[m]['train_gb']:>18.2f}" for m in METHODS))
        lines.append(f"{'load':<22}" + "".join(f"{_load(estimates[m]):>18}" for m in METHODS))
    lines.append("-" * len(header))
    lines.append(f"{'total' + (' (the larger)' if loading else ''):<22}"
                 + "".join(f"{estimates[m]['total_gb']:>18.2f}" for m in METHODS))
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
    if loading:
        lines.append(_load_legend(settings["backend"]))
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
        if rec.get("strategy", "none") != "none":
            what += f", {STRATEGY_NAMES[rec['strategy']]} over {rec['world_size']} GPUs" + (
                f" ({rec['nproc_per_node']} a node x {rec['nnodes']} nodes)" if rec.get("nnodes", 1) > 1 else "")
            if rec.get("cpu_offload"):
                what += f" with CPU offload ({rec['offloaded_gb']:.1f} GB of RAM a process)"
            what += f": {rec['per_gpu_gb']:.1f} GB a GPU"
        lines.append(f"Recommendation  {what}")
    lines.append(f"                {rec['reason']}")
    for note in plan.get("notes", []):
        lines.append(f"Note            {note}")
    for warning in plan.get("warnings", []):
        lines.append(f"Warning         {warning}")
    return "\n".join(lines)


def _gpus_line(hardware: dict) -> str:
    world = hardware.get("world_size", 1)
    if world <= 1:
        return ""
    nodes = hardware.get("nodes", 1)
    where = f" on each of {nodes} nodes" if nodes > 1 else ""
    return f"\n          planned for {hardware['num_gpus']} x {hardware['gpu']}{where}: {world} GPUs, estimates a GPU"


def _layout(estimate: dict) -> str:
    """ "DDP x2", "FSDP /2", "FSDP /2 offload": how a method's figures are laid out over the GPUs."""
    world = estimate.get("world_size", 1)
    if estimate.get("strategy", "none") == "ddp":
        return f"DDP x{world}"
    if estimate.get("strategy") == "fsdp":
        return f"FSDP /{world}" + (" offload" if estimate.get("cpu_offload") else "")
    return "one GPU"


def _part(estimate: dict, part: str) -> str:
    """A part's cell; a sharded part shows its division ("36.80/2=18.40", or "36.80/2 in RAM")."""
    whole = estimate.get("unsharded", {}).get(part)
    value = estimate["components"].get(part, 0.0)
    if whole:
        world = estimate["world_size"]
        return f"{whole:.2f}/{world} in RAM" if estimate.get("cpu_offload") else f"{whole:.2f}/{world}={value:.2f}"
    return _gb(value)


def _load(estimate: dict) -> str:
    """The loading's GPU peak, and the RAM a process holds then ("1.53, 131 RAM")."""
    text = _gb(estimate.get("load_gb", 0.0))
    ram = estimate.get("load_ram_gb", 0.0)
    return f"{text}, {ram:.0f} RAM" if ram else text


def _load_legend(backend: str) -> str:
    if backend == "unsloth":
        return ("(load: Unsloth loads the whole model onto every GPU before sharding it, 4-bit included, "
                "unsloth/models/fsdp2_load.py; the peft backend loads it into each process's RAM)")
    return ("(load: the peft backend loads the whole model into each process's RAM and moves one unit at a time "
            "to the GPU; Unsloth would load all of it onto every GPU)")


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
    parser.add_argument("--num-gpus", "--nproc-per-node", dest="num_gpus", type=int, default=1, metavar="N",
                        help="GPUs a node (default 1): estimates become per GPU, and the recommendation picks DDP or FSDP")
    parser.add_argument("--nodes", "--nnodes", dest="nodes", type=int, default=1, metavar="M",
                        help="nodes with --num-gpus GPUs each (default 1); torchrun's names work too")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    _time_and_cost_arguments(parser)
    return parser


def plan_command(argv: list[str]) -> int:
    """`lora-tui plan ...`. UserError propagates to tui/cli.py, which prints one line and exits 2."""
    args = _parser().parse_args(argv)
    plan = build_plan(
        args.model, vram_gb=args.vram, gpu=args.gpu, seq_len=args.seq_len, batch=args.batch,
        trust_remote_code=args.trust_remote_code, backend=args.backend, rank=args.rank,
        num_gpus=args.num_gpus, nodes=args.nodes,
    )
    text = _add_time_and_cost(plan, args)  # issue 20: with --train-tokens or --dataset
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan) + text)
    return 0


def _time_and_cost_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("time and cost (engine/planner/throughput.py, cost.py)")
    what = group.add_mutually_exclusive_group()
    what.add_argument("--train-tokens", type=int, metavar="N", help="tokens trained a epoch, for time and cost")
    what.add_argument("--dataset", metavar="PATH", help="count the trained tokens of this dataset with the model's tokenizer")
    group.add_argument("--epochs", type=float, default=1.0, metavar="E", help="epochs (default 1)")
    group.add_argument("--tokenizer", metavar="MODEL", help="count --dataset with this model's tokenizer (a config.json has none)")


def _add_time_and_cost(plan: dict, args) -> str:
    from engine.planner import cost

    if args.train_tokens is None and args.dataset is None:
        return ""
    if not (math.isfinite(args.epochs) and args.epochs > 0):  # inf would overflow the token count
        raise UserError(f"--epochs must be a positive number, not {args.epochs:g}.")
    if args.dataset is not None:
        workload = cost.dataset_workload(args.dataset, args.tokenizer or args.model, max_seq_length=args.seq_len,
                                         epochs=args.epochs)
    elif args.train_tokens < 1:
        raise UserError(f"--train-tokens must be a positive whole number, not {args.train_tokens}.")
    else:
        workload = cost.Workload(args.train_tokens, args.epochs, float(args.seq_len), None, "--train-tokens")
    cost.add_time_and_cost(plan, inspect_model(args.model, trust_remote_code=args.trust_remote_code), workload)
    return "\n" + cost.format_time_and_cost(plan)
