"""How far the training-time model (engine/planner/throughput.py) is from published throughputs.

Run: `.venv/bin/python benchmarks/throughput_calibration.py [--fit]` (a second, no GPU, no weights).
It prints one row per published figure: the source's tokens/s, the model's, and model / published.
`--fit` searches the per-backend utilisation and dequantisation cost that minimise the worst
log-error over the `fit` points and prints them (the constants in throughput.py were set from it).

Sources (tokens/s = trained tokens per GPU per second):
  LF  LLaMA-Factory wiki, "Performance comparison" (edited 2024-04-15),
      https://github.com/hiyouga/LLaMA-Factory/wiki/Performance-comparison . LLaMA2-7B, LoRA rank 8
      on all linear modules. Table 1: batch 4, accumulation 2, max length 1024; 16-bit LoRA and
      4-bit QLoRA; "HF+FA2" is the peft backend's stack, "HF" the same without FlashAttention 2.
      Its GPU is not written under table 1; the page's long-context table says "NVIDIA A100 40GB *
      1" and table 1's 4-bit Unsloth figure (3,726 at 4,096 tokens a micro-batch) sits with that
      table's (3,413 at 4,096), so table 1 is taken as the same A100 40GB. Table 3: QLoRA, batch 1,
      accumulation 4, A100 40GB, sequence lengths 1,024 to 16,384.
  PB  "Comparison of torchtune and PEFT results for Llama3 8b instruct LoRA-finetuning on single
      device" (notes with PEFT commit 1b16753, transformers 7f552e2, bitsandbytes 0.43.3, torch
      2.3.1), NVIDIA GeForce RTX 4090: PEFT + bitsandbytes QLoRA of Llama-3-8B-Instruct, about
      2,300 tokens/s without activation checkpointing and 1,410 with it. The notes give neither the
      batch nor the row length (torchtune's Alpaca recipe: batch 2, Alpaca rows of a few hundred
      tokens): assumed 2 x 300 here, so these two are checks, not fitted.
Peak dense bf16 TFLOPS: A100 312 (NVIDIA A100 data sheet), RTX 4090 165.2 (Ada whitepaper, BF16
tensor with FP32 accumulate, the rate PyTorch's bf16 matmuls use).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.planner import throughput  # noqa: E402
from engine.planner.architecture import inspect_model  # noqa: E402
from engine.planner.target_modules import count_trainable_params  # noqa: E402

CONFIGS = ROOT / "tests" / "configs"
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Point:
    source: str
    model: str
    gpu_tflops: float
    gpu: str
    method: str
    backend: str
    batch: int
    row_tokens: int
    r: int
    published: float
    checkpointing: bool = True
    fit: bool = True
    note: str = ""


A100, RTX4090 = 312.0, 165.2
POINTS = [
    Point("LF t1", "llama-2-7b", A100, "A100 40GB", "lora", "peft", 4, 1024, 8, 2954, note="HF+FA2, 16 bit"),
    Point("LF t1", "llama-2-7b", A100, "A100 40GB", "lora", "unsloth", 4, 1024, 8, 4007, note="Unsloth+FA2, 16 bit"),
    Point("LF t1", "llama-2-7b", A100, "A100 40GB", "qlora", "peft", 4, 1024, 8, 2415, note="HF (no FA2), 4 bit"),
    Point("LF t1", "llama-2-7b", A100, "A100 40GB", "qlora", "unsloth", 4, 1024, 8, 3726, note="Unsloth+FA2, 4 bit"),
    *[Point("LF t3", "llama-2-7b", A100, "A100 40GB", "qlora", "peft", 1, n, 8, tgs, fit=n <= 4096, note=f"FA2, {n:,} tokens")
      for n, tgs in ((1024, 2295), (2048, 2741), (4096, 2926), (8192, 3128), (16384, 3542))],
    *[Point("LF t3", "llama-2-7b", A100, "A100 40GB", "qlora", "unsloth", 1, n, 8, tgs, fit=n <= 4096,
            note=f"Unsloth+FA2, {n:,} tokens")
      for n, tgs in ((1024, 2556), (2048, 3178), (4096, 3413), (8192, 3632), (16384, 4050))],
    Point("PB", "llama-3.1-8b", RTX4090, "RTX 4090", "qlora", "peft", 2, 300, 8, 1410, True, False,
          "checkpointing on; batch x length assumed"),
    Point("PB", "llama-3.1-8b", RTX4090, "RTX 4090", "qlora", "peft", 2, 300, 8, 2300, False, False,
          "checkpointing off; batch x length assumed"),
]


def predicted(point: Point) -> float:
    info = inspect_model(str(CONFIGS / point.model))
    trainable = count_trainable_params(info, [m for m in ALL if m in info.linear_modules], point.r)
    estimate = throughput.estimate_time(
        info, point.method, peak_tflops=point.gpu_tflops, train_tokens=1_000_000, tokens_per_row=point.row_tokens,
        batch_size=point.batch, trainable_params=trainable, gradient_checkpointing=point.checkpointing,
        backend=point.backend,
    )
    return estimate.tokens_per_second


def report() -> list[float]:
    print(f"{'source':<7}{'gpu':<11}{'method':<7}{'backend':<9}{'batch x tokens':>15}{'published':>11}{'model':>8}{'ratio':>7}  note")
    errors = []
    for p in POINTS:
        ours = predicted(p)
        ratio = ours / p.published
        if p.fit:
            errors.append(abs(ratio - 1))
        print(f"{p.source:<7}{p.gpu:<11}{p.method:<7}{p.backend:<9}{f'{p.batch} x {p.row_tokens:,}':>15}"
              f"{p.published:>11,.0f}{ours:>8,.0f}{ratio:>7.2f}  {p.note}{'' if p.fit else ' (check, not fitted)'}")
    checks = [abs(predicted(p) / p.published - 1) for p in POINTS if not p.fit]
    print(f"\nfitted points: {len(errors)}; median |error| {100 * sorted(errors)[len(errors) // 2]:.0f} %, "
          f"worst {100 * max(errors):.0f} %")
    if checks:
        print(f"checks (assumed shapes): worst |error| {100 * max(checks):.0f} %")
    return errors


def fit() -> None:
    for backend in ("unsloth", "peft"):
        points = [p for p in POINTS if p.fit and p.backend == backend]
        best = None
        for u, dq in itertools.product([x / 100 for x in range(15, 71)], range(0, 3001, 50)):
            throughput.UTILISATION[backend], throughput.DEQUANT_FLOPS_PER_WEIGHT[backend] = u, float(dq)
            worst = max(abs(math.log(predicted(p) / p.published)) for p in points)
            if best is None or worst < best[0]:
                best = (worst, u, dq)
        print(f"{backend}: utilisation {best[1]:.2f}, dequantisation {best[2]} FLOPs a weight a pass, "
              f"worst |log error| {best[0]:.3f}")
        throughput.UTILISATION[backend], throughput.DEQUANT_FLOPS_PER_WEIGHT[backend] = best[1], float(best[2])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="search the constants, then print the table with them")
    if parser.parse_args().fit:
        fit()
    report()
