"""`--dry-run`: check everything a run needs, train nothing, say what was found.

The model resolves and its architecture is read; the target modules exist in it; the dataset
loads, maps and renders with the model's tokenizer; the estimated peak memory fits the hardware.
Each failed check is one sentence; the report lists the findings in the order a run meets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.session.schema import Session


@dataclass
class PreflightReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        text = "\n".join(self.lines)
        if self.problems:
            text += "\n\nProblems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        else:
            text += "\n\nDry run OK: the session is ready to train."
        return text


def preflight(session: Session) -> PreflightReport:
    report = PreflightReport()
    out = report.lines.append
    out(f"Session: method {session.method}, backend {session.backend}, output {session.output.dir}")
    _check_processes(session, report)
    from engine.errors import UserError

    try:
        check_trackers(session)
    except UserError as error:
        report.problems.append(str(error))
    if session.training.trackers:
        out(f"Trackers: {', '.join(session.training.trackers)}"
            + (" (TensorBoard: RUN_DIR/tensorboard)" if "tensorboard" in session.training.trackers else ""))
    if session.output.on_finish:
        out(f"When finished: runs `{session.output.on_finish}` once after a successful run (output.on_finish)")

    from engine.models import resolve_model

    resolved = resolve_model(session.model.name)  # a model that cannot be found stops here
    out(f"Model: {session.model.name} -> {resolved.path} ({resolved.source})")
    info = _inspect(resolved.path, session, report)

    from engine.data import prepare_dataset
    from engine.models import load_tokenizer

    tokenizer = load_tokenizer(resolved.path)
    data = prepare_dataset(session.dataset, tokenizer, session.model.max_seq_length, seed=session.training.seed)
    out("")
    out(data.report.format_report())
    _check_memory(info, session, report)
    return report


# The package each of TRL's tracker names needs (TensorBoard: tensorboard, or tensorboardX).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
                    "mlflow": ("mlflow",)}


def check_trackers(session: Session) -> None:
    """training.report_to: each tracker's package imports here; else one sentence (UserError) before training."""
    import importlib.util

    from engine.errors import UserError

    for name in session.training.trackers:
        if not any(importlib.util.find_spec(package) for package in TRACKER_PACKAGES[name]):
            raise UserError(
                f'training.report_to names "{name}", which is not installed in this environment; '
                f"install it (pip install {TRACKER_PACKAGES[name][0]}) or remove it from report_to."
            )


def _check_processes(session: Session, report: PreflightReport) -> None:
    """Several processes (the session's `distributed` section): how many, and whether the strategy can run here."""
    from engine.errors import UserError
    from engine.training import distributed

    launch = distributed.resolve_launch(session)
    if launch.distributed:
        offload = ", shards in RAM (CPU offload)" if session.distributed.cpu_offload and launch.strategy == "fsdp" else ""
        report.lines.append(f"Processes: {distributed.describe(launch)} through torchrun{offload}")
    on_gpu = distributed.visible_gpus() > 0
    backend = distributed.first_backend(session, launch, on_gpu)
    if session.backend == "auto" and backend == "peft":
        report.lines.append("Backend: auto runs peft here (Unsloth's FSDP2 shards 4-bit weights on GPUs only)")
    try:
        distributed.check_strategy(session, launch, backend, on_gpu=on_gpu)
    except UserError as error:
        report.problems.append(str(error))


def _inspect(model_path: str, session: Session, report: PreflightReport):
    from engine.planner.architecture import inspect_model
    from engine.planner.target_modules import count_trainable_params

    info = inspect_model(model_path, trust_remote_code=session.model.trust_remote_code)
    report.lines.append(
        f"Architecture: {info.architecture}, {info.params:,} parameters, {info.num_layers} layers, "
        f"context {info.context_length}"
    )
    if session.method != "full":
        missing = [m for m in session.lora.target_modules if m not in info.linear_modules + ["embed_tokens", "lm_head"]]
        if missing:
            report.problems.append(
                f"lora.target_modules: {', '.join(missing)} not in this model; it has {', '.join(info.linear_modules)}."
            )
        else:
            trainable = count_trainable_params(info, session.lora.target_modules, session.lora.r)
            report.lines.append(
                f"LoRA: r {session.lora.r} on {', '.join(session.lora.target_modules)}: "
                f"{trainable:,} trainable parameters ({100 * trainable / info.params:.2f}%)"
            )
    return info


def _check_memory(info, session: Session, report: PreflightReport) -> None:
    from engine.planner.hardware import probe_hardware
    from engine.planner.memory import estimate_for_session

    hardware = probe_hardware()
    # The backend the run will use: peft's loss and checkpoints need more than Unsloth's (issue 16).
    estimate = estimate_for_session(info, session, device="cpu" if hardware.cpu_only else "cuda")
    if hardware.cpu_only:
        budget, where = hardware.ram_available_gb, "available RAM (CPU only: training will be slow)"
    else:
        budget, where = hardware.gpus[0].total_gb, f"VRAM of {hardware.gpus[0].name}"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in estimate.components.items())
    report.lines.append("")
    report.lines.append(f"Memory: estimated peak {estimate.total_gb:.2f} GiB ({parts}) against {budget:.1f} GiB {where}")
    if estimate.total_gb > budget:
        report.problems.append(
            f"estimated peak memory {estimate.total_gb:.1f} GiB exceeds the {budget:.1f} GiB {where}; "
            "try `lora-tui plan --model ...` for a setting that fits."
        )
