"""How far the planner's memory estimate is from published and measured peak-memory figures, per backend.

Run: `.venv/bin/python benchmarks/memory_estimate.py` (a few seconds, no GPU, no weights).
It prints one row per calibration point, with the estimator's signed error, and a summary line per
backend and kind of source. The models are the real configs in tests/configs, built on the meta device.

Each point names the backend whose run it measures, and is estimated with that backend's terms:
  unsloth  - Unsloth (the `unsloth` backend: offloaded checkpoints, fused cross-entropy)
  peft     - transformers + PEFT (+ TRL), "Hugging Face + FA2" in Unsloth's tables (the `peft` backend)
  other    - another framework (torchtune, the QLoRA paper's script), estimated with the plain terms
             and the knobs written next to it; indicative, not a backend's calibration
The goal (issue 16): every measured point of each backend within 10 %.

What a figure counts (`counts`), so that like is compared with like:
  device    - everything on the card (a run that just fits an N GB card), or a CPU worker's peak RSS:
              the whole estimate
  reserved  - torch.cuda.max_memory_reserved(): no CUDA context
  active    - torch's peak active memory: no CUDA context and no allocator fragmentation

Kinds of point:
  measured  - a peak measured on a real run (or the longest context that fits an N GB card, whose
              peak is the card), with the run's settings
  bound     - a published "it fits in N GB" (the estimate should be at most N)
  oom       - a published "out of memory on N GB" at any length (the estimate should be above N
              even at OOM_PROBE_TOKENS tokens)
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
from engine.planner.memory import estimate_memory  # noqa: E402
from engine.planner.memory_terms import GPU_CONTEXT_GB  # noqa: E402

TORCHTUNE = "torchtune README, 'Memory and training speed' (bs 2, packed seq 2048, compile)"
TORCHTUNE_3B = "torchtune README, 'Optimization flags' (Llama 3.2 3B, bs 2, seq 4096, A100, peak active)"
# Unsloth's context-length tables: the longest sequence that fits a card of N GB, QLoRA r 32 on all
# linear layers, batch 1, sequences padded to the length; the peak at that length is the card.
CONTEXT_8B = (
    "https://docs.unsloth.ai/basics/unsloth-benchmarks (and the unslothai/unsloth README), 'Llama 3.1 (8B) "
    "max. context length': GPU VRAM / Unsloth context length / Hugging Face + FA2 = 8 GB 2,972 OOM; "
    "12 GB 21,848 932; 16 GB 40,724 2,551; 24 GB 78,475 5,789; 40 GB 153,977 12,264; 48 GB 191,728 15,502; "
    "80 GB 342,733 28,454"
)
CONTEXT_70B = (
    "https://unsloth.ai/blog/llama3-3 (and the same docs page), 'Llama 3.3 (70B) max. context length' on an 80GB "
    "A100: GPU VRAM / Unsloth (+ Apple CCE) / Hugging Face + FA2 = 48 GB 12,106 OOM; 80 GB 89,389 6,916"
)
UNSLOTH_REQ = "Unsloth docs, 'Fine-tuning VRAM requirements' (absolute minimum)"
SEED = "seed table of the task (rule of thumb)"
QLORA_PAPER = "QLoRA paper (Dettmers et al. 2023): 65B finetuned on a single 48 GB GPU"
LOCAL_CPU = "this project, measured here: `lora-tui --replay` on 2 CPU cores, the worker's peak RSS"

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TORCHTUNE_LORA = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # q, v, output_proj + MLP
# This machine's CPU runs: `benchmarks/peak_memory.py --backend B --steps 2 --batch-size 2` on
# 2026-12-01 (rows that fill max_seq_length; "unsloth" checkpointing, plain on a CPU, or
# --gradient-checkpointing false), and the demo
# run of 2026-11-29 (demo data, batch 4, rows of 95-179 tokens padded to the longest: the worker's
# RSS logged at steps 1-4, 2.288-2.295 GiB). (backend, method, batch, max_seq_length, peak RSS GiB, note)
CPU_RUNS = (
    ("unsloth", "lora", 2, 128, 2.00, "peak RSS"),
    ("unsloth", "lora", 2, 512, 2.76, "peak RSS"),
    ("unsloth", "lora", 2, 1024, 3.82, "peak RSS"),
    ("unsloth", "qlora", 2, 128, 1.69, "peak RSS"),
    ("unsloth", "qlora", 2, 512, 2.24, "peak RSS"),
    ("unsloth", "lora", 4, 179, 2.30, "worker RSS, demo data, 2026-11-29"),
    ("unsloth", "lora", 2, 128, 2.20, "peak RSS, no checkpointing"),
    ("unsloth", "lora", 2, 512, 4.02, "peak RSS, no checkpointing"),
    ("peft", "lora", 2, 128, 2.04, "peak RSS"),
    ("peft", "lora", 2, 512, 3.22, "peak RSS"),
    ("peft", "lora", 2, 1024, 4.99, "peak RSS"),
    ("peft", "qlora", 2, 128, 1.80, "peak RSS"),
    ("peft", "qlora", 2, 512, 2.82, "peak RSS"),
)
# A published "OOM" at every length: the estimate must exceed the card even at this many tokens.
OOM_PROBE_TOKENS = 256
BACKEND_NAMES = ("unsloth", "peft")
GOAL = 0.10  # issue 16: each backend's worst measured point within 10 %


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
    backend: str | None = None  # "unsloth", "peft", or None for another framework

    @property
    def group(self) -> str:
        return self.backend or "other"


def _context(backend: str, model: str, vram: int, tokens: int | None, source: str) -> Point:
    """One cell of Unsloth's context-length tables; None tokens is a published OOM."""
    settings = dict(r=32, target_modules=ALL_LINEAR, batch_size=1, seq_len=tokens or OOM_PROBE_TOKENS,
                    gradient_checkpointing="unsloth", optim="adamw_8bit")
    name = "Llama 3.3 70B: " if "70b" in model else ""
    if tokens is None:
        return Point(source, model, "qlora", float(vram), kind="oom", backend=backend, settings=settings,
                     note=f"{name}OOM on {vram} GB")
    return Point(source, model, "qlora", float(vram), backend=backend, settings=settings,
                 note=f"{name}{tokens:,} tokens fit in {vram} GB")


POINTS: list[Point] = [
    # -- unsloth: Unsloth's own long-context limits ------------------------------------------------
    *[
        _context("unsloth", "llama-3.1-8b", vram, tokens, CONTEXT_8B)
        for vram, tokens in ((8, 2972), (12, 21848), (16, 40724), (24, 78475), (40, 153977), (48, 191728), (80, 342733))
    ],
    *[_context("unsloth", "llama-3.1-70b", vram, tokens, CONTEXT_70B) for vram, tokens in ((48, 12106), (80, 89389))],
    # -- peft: the Hugging Face + FA2 column of the same tables (transformers' loss on full logits,
    # checkpoints on the GPU, PEFT's fp32 embeddings under QLoRA) ----------------------------------
    *[
        _context("peft", "llama-3.1-8b", vram, tokens, CONTEXT_8B)
        for vram, tokens in ((8, None), (12, 932), (16, 2551), (24, 5789), (40, 12264), (48, 15502), (80, 28454))
    ],
    *[_context("peft", "llama-3.1-70b", vram, tokens, CONTEXT_70B) for vram, tokens in ((48, None), (80, 6916))],
    # -- this machine's CPU: each backend's worker, peak RSS (benchmarks/peak_memory.py) -----------
    *[
        Point(LOCAL_CPU, "smollm2-135m", method, gb, backend=backend, settings=dict(
            r=16, target_modules=ALL_LINEAR, batch_size=batch, seq_len=seq, optim="adamw_8bit", device="cpu",
            gradient_checkpointing=False if "no checkpointing" in note else "unsloth"), note=note)
        for backend, method, batch, seq, gb, note in CPU_RUNS
    ],
    # -- other frameworks: the plain terms with their knobs ---------------------------------------
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
        Point(UNSLOTH_REQ, model, method, gb, kind="rule", backend="unsloth", settings=dict(
            r=16, target_modules=ALL_LINEAR, batch_size=1, seq_len=512, gradient_checkpointing="unsloth",
            optim="adamw_8bit"))
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
        estimate = estimate_memory(info, point.method, backend=point.backend, **point.settings)
        comparable = comparable_gb(estimate, point.counts)
        error = (comparable - point.measured_gb) / point.measured_gb
        held = None
        if point.kind == "bound":
            held = comparable <= point.measured_gb
        elif point.kind == "oom":
            held = comparable > point.measured_gb
        rows.append(dict(point=point, estimate=estimate, comparable=comparable, error=error, held=held))
    return rows


def comparable_gb(estimate, counts: str) -> float:
    """The part of the estimate that the published figure counts."""
    if counts == "reserved":
        return estimate.total_gb - GPU_CONTEXT_GB
    if counts == "active":
        return estimate.total_gb - estimate.components["overhead"]
    return estimate.total_gb


def summary(rows: list[dict]) -> dict[str, dict]:
    """Per backend ("unsloth", "peft", "other"): measured points' median and worst |error|, rules'
    the same, and how many published bounds / OOMs the estimate respects."""
    result: dict[str, dict] = {}
    for group in (*BACKEND_NAMES, "other"):
        mine = [row for row in rows if row["point"].group == group]
        figures: dict = {}
        for kind in ("measured", "rule"):
            errors = [abs(row["error"]) for row in mine if row["point"].kind == kind]
            if errors:
                figures[kind] = {"points": len(errors), "median_abs_error": statistics.median(errors),
                                 "max_abs_error": max(errors)}
        checks = [row for row in mine if row["point"].kind in ("bound", "oom")]
        if checks:
            figures["bound"] = {"points": len(checks), "held": sum(1 for row in checks if row["held"])}
        result[group] = figures
    return result


def main() -> int:
    rows = evaluate()
    header = (f"{'backend':8} {'kind':8} {'model':14} {'method':6} {'batch x seq':>13} {'published':>9} "
              f"{'estimate':>9} {'error':>7}  note")
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
            error = "ok" if row["held"] else "OVER"
        elif point.kind == "oom":
            error = "ok" if row["held"] else "FITS"
        print(
            f"{point.group:8} {point.kind:8} {point.model:14} {point.method:6} {shape:>13} {point.measured_gb:>8.2f}G "
            f"{row['comparable']:>8.2f}G {error:>7}  {point.counts}; {point.note}".rstrip("; ")
        )
    print()
    for group, figures in summary(rows).items():
        for kind, values in figures.items():
            if kind == "bound":
                print(f"{group:8} bound:    {values['held']} of {values['points']} published 'fits in N GB' / 'OOM on N GB' respected")
            else:
                print(f"{group:8} {kind + ':':9} median |error| {values['median_abs_error']:.1%}, "
                      f"worst {values['max_abs_error']:.1%} over {values['points']} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
