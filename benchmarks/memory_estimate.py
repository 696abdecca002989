"""How far the planner's memory estimate is from published peak-memory figures.

Run: `.venv/bin/python benchmarks/memory_estimate.py` (a few seconds, no GPU, no weights).
It prints one row per calibration point, with the estimator's signed error, and a summary line per
kind of source. The models are the real configs in tests/configs, built on the meta device.

What a figure counts (`counts`), so that like is compared with like:
  device    - everything on the card (a run that just fits an N GB card): the whole estimate
  reserved  - torch.cuda.max_memory_reserved(): no CUDA context
  active    - torch's peak active memory: no CUDA context and no allocator fragmentation

Kinds of point:
  measured  - a peak measured on a real run, with the run's settings (torchtune, Unsloth)
  bound     - a published "it fits in N GB" (the estimate should be at most N)
  rule      - a rule-of-thumb table without run settings (the seed's, Unsloth's "absolute minimum");
              the settings assumed for it are written next to it and its error is only indicative
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.planner.architecture import inspect_model  # noqa: E402
from engine.planner.memory import GPU_CONTEXT_GB, estimate_memory  # noqa: E402

TORCHTUNE = "torchtune README, 'Memory and training speed' (bs 2, packed seq 2048, compile)"
TORCHTUNE_3B = "torchtune README, 'Optimization flags' (Llama 3.2 3B, bs 2, seq 4096, A100, peak active)"
UNSLOTH_CTX = "Unsloth README/docs, 'context length benchmarks' (QLoRA r 32, all linear, bs 1)"
UNSLOTH_REQ = "Unsloth docs, 'Fine-tuning VRAM requirements' (absolute minimum)"
SEED = "seed table of the task (rule of thumb)"
QLORA_PAPER = "QLoRA paper (Dettmers et al. 2023): 65B finetuned on a single 48 GB GPU"
LOCAL_CPU = "this project, measured here: `lora-tui --replay` on 2 CPU cores, Unsloth's CPU backend"

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TORCHTUNE_LORA = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # q, v, output_proj + MLP


@dataclass
class Point:
    source: str
    model: str  # folder under tests/configs
    method: str
    measured_gb: float
    kind: str = "measured"
    settings: dict = field(default_factory=dict)
    counts: str = "device"
    note: str = ""


POINTS: list[Point] = [
    # torchtune, Llama 3.1 8B on one RTX 4090: activation checkpointing on, chunked cross-entropy,
    # LoRA rank 8 on q/v/output projections and the MLP, torch AdamW.
    Point(TORCHTUNE, "llama-3.1-8b", "lora", 16.2, counts="reserved", settings=dict(
        r=8, target_modules=TORCHTUNE_LORA, batch_size=2, seq_len=2048, gradient_checkpointing=True,
        optim="adamw_torch", loss_kernel="chunked", adapter_dtype="bfloat16")),
    Point(TORCHTUNE, "llama-3.1-8b", "qlora", 7.4, counts="reserved", settings=dict(
        r=8, target_modules=TORCHTUNE_LORA, batch_size=2, seq_len=2048, gradient_checkpointing=True,
        optim="adamw_torch", loss_kernel="chunked", adapter_dtype="bfloat16")),
    # torchtune, Llama 3.2 3B, bs 2 x 4096 packed tokens, compile and chunked cross-entropy.
    Point(TORCHTUNE_3B, "llama-3.2-3b", "full", 42.9, counts="active", settings=dict(
        batch_size=2, seq_len=4096, gradient_checkpointing=False, optim="adamw_torch", loss_kernel="chunked"),
        note="no activation checkpointing"),
    Point(TORCHTUNE_3B, "llama-3.2-3b", "full", 24.9, counts="active", settings=dict(
        batch_size=2, seq_len=4096, gradient_checkpointing=True, optim="adamw_torch", loss_kernel="chunked"),
        note="activation checkpointing"),
    Point(TORCHTUNE_3B, "llama-3.2-3b", "lora", 8.5, counts="active", settings=dict(
        r=64, target_modules=TORCHTUNE_LORA, batch_size=2, seq_len=4096, gradient_checkpointing="unsloth",
        optim="adamw_torch", loss_kernel="chunked", adapter_dtype="bfloat16"),
        note="checkpointing + activation offloading"),
    Point(TORCHTUNE_3B, "llama-3.2-3b", "qlora", 4.6, counts="active", settings=dict(
        r=64, target_modules=TORCHTUNE_LORA, batch_size=2, seq_len=4096, gradient_checkpointing="unsloth",
        optim="adamw_torch", loss_kernel="chunked", adapter_dtype="bfloat16"),
        note="checkpointing + activation offloading"),
    # Unsloth: the longest context that fits a card of N GB, Llama 3.1 8B and Llama 3.3 70B QLoRA;
    # the peak at that length is the card's memory.
    *[
        Point(UNSLOTH_CTX, "llama-3.1-8b", "qlora", float(vram), settings=dict(
            r=32, target_modules=ALL_LINEAR, batch_size=1, seq_len=tokens, gradient_checkpointing="unsloth",
            optim="adamw_8bit", loss_kernel="fused"), note=f"{tokens:,} tokens fit in {vram} GB")
        for vram, tokens in ((8, 2972), (12, 21848), (16, 40724), (24, 78475), (40, 153977), (80, 342733))
    ],
    *[
        Point(UNSLOTH_CTX, "llama-3.1-70b", "qlora", float(vram), settings=dict(
            r=32, target_modules=ALL_LINEAR, batch_size=1, seq_len=tokens, gradient_checkpointing="unsloth",
            optim="adamw_8bit", loss_kernel="fused"), note=f"Llama 3.3 70B: {tokens:,} tokens fit in {vram} GB")
        for vram, tokens in ((48, 12106), (80, 89389))
    ],
    # The demo model trained for real on this machine's CPU (2026-11-29): LoRA r 16 on the seven
    # projections, batch 4, rows of 95-179 tokens (padded to the longest in the batch), the worker's
    # resident memory as logged in events.jsonl (memory_gb) at steps 1-4: 2.288-2.295 GiB.
    Point(LOCAL_CPU, "smollm2-135m", "lora", 2.30, settings=dict(
        r=16, target_modules=ALL_LINEAR, batch_size=4, seq_len=179, gradient_checkpointing=True,
        optim="adamw_8bit", device="cpu"), note="worker RSS, demo data"),
    # QLoRA paper: Guanaco 65B, LoRA r 64 on all linear layers cast to bf16 (qlora.py --bf16),
    # paged 32-bit AdamW.
    Point(QLORA_PAPER, "llama-65b", "qlora", 48.0, kind="bound", settings=dict(
        r=64, target_modules=ALL_LINEAR, batch_size=1, seq_len=512, gradient_checkpointing=True,
        optim="paged_adamw_32bit", loss_kernel="eager", adapter_dtype="bfloat16"), note="fits in 48 GB"),
    # The seed's table: assumed batch 1 x 512 tokens, checkpointing, r 16 on all linear layers;
    # full fine-tuning with torch AdamW on bf16 weights (2 + 2 + 4 bytes a parameter).
    *[
        Point(SEED, model, method, gb, kind="rule", settings=dict(
            r=16, target_modules=ALL_LINEAR, batch_size=1, seq_len=512, gradient_checkpointing=True,
            optim="adamw_torch" if method == "full" else "adamw_8bit", loss_kernel="eager"),
            note="'56+'" if (model, method) == ("llama-2-7b", "full") else "")
        for model, method, gb in (
            ("llama-2-7b", "full", 56), ("llama-2-7b", "lora", 16), ("llama-2-7b", "qlora", 6),
            ("llama-2-13b", "full", 104), ("llama-2-13b", "lora", 32), ("llama-2-13b", "qlora", 10),
            ("llama-3.1-70b", "full", 560), ("llama-3.1-70b", "lora", 160), ("llama-3.1-70b", "qlora", 48),
        )
    ],
    # Unsloth's minimum table: assumed batch 1 x 512 tokens with Unsloth's own kernels.
    *[
        Point(UNSLOTH_REQ, model, method, gb, kind="rule", settings=dict(
            r=16, target_modules=ALL_LINEAR, batch_size=1, seq_len=512, gradient_checkpointing="unsloth",
            optim="adamw_8bit", loss_kernel="fused"))
        for model, method, gb in (
            ("llama-3.2-3b", "qlora", 3.5), ("llama-3.2-3b", "lora", 8),
            ("llama-3.1-8b", "qlora", 6), ("llama-3.1-8b", "lora", 22),
            ("llama-3.1-70b", "qlora", 41), ("llama-3.1-70b", "lora", 164),
        )
    ],
]


def evaluate(points: list[Point] = POINTS) -> list[dict]:
    rows = []
    for point in points:
        info = inspect_model(str(ROOT / "tests" / "configs" / point.model))
        estimate = estimate_memory(info, point.method, **point.settings)
        comparable = comparable_gb(estimate, point.counts)
        error = (comparable - point.measured_gb) / point.measured_gb
        ok = comparable <= point.measured_gb if point.kind == "bound" else None
        rows.append(dict(point=point, estimate=estimate, comparable=comparable, error=error, within_bound=ok))
    return rows


def comparable_gb(estimate, counts: str) -> float:
    """The part of the estimate that the published figure counts."""
    if counts == "reserved":
        return estimate.total_gb - GPU_CONTEXT_GB
    if counts == "active":
        return estimate.total_gb - estimate.components["overhead"]
    return estimate.total_gb


def summary(rows: list[dict]) -> dict[str, dict]:
    result = {}
    for kind in ("measured", "rule"):
        errors = [abs(row["error"]) for row in rows if row["point"].kind == kind]
        if errors:
            result[kind] = {"points": len(errors), "median_abs_error": statistics.median(errors), "max_abs_error": max(errors)}
    bounds = [row for row in rows if row["point"].kind == "bound"]
    result["bound"] = {"points": len(bounds), "held": sum(1 for row in bounds if row["within_bound"])}
    return result


def main() -> int:
    rows = evaluate()
    header = f"{'kind':8} {'model':14} {'method':6} {'batch x seq':>13} {'published':>9} {'estimate':>9} {'error':>7}  note"
    print(header)
    print("-" * len(header))
    source = None
    for row in rows:
        point = row["point"]
        if point.source != source:
            source = point.source
            print(f"# {source}")
        shape = f"{point.settings.get('batch_size', 4)} x {point.settings.get('seq_len', 512)}"
        error = f"{row['error']:+.0%}"
        if point.kind == "bound":
            error = "ok" if row["within_bound"] else "OVER"
        print(
            f"{point.kind:8} {point.model:14} {point.method:6} {shape:>13} {point.measured_gb:>8.1f}G "
            f"{row['comparable']:>8.1f}G {error:>7}  {point.counts}; {point.note}".rstrip("; ")
        )
    print()
    for kind, figures in summary(rows).items():
        if kind == "bound":
            print(f"bound:    {figures['held']} of {figures['points']} published 'fits in N GB' figures respected")
        else:
            print(
                f"{kind + ':':9} median |error| {figures['median_abs_error']:.0%}, "
                f"worst {figures['max_abs_error']:.0%} over {figures['points']} points"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
