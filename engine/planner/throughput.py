"""How long training takes: FLOPs per trained token over what the GPU delivers.

The count (per token, N = parameters the matrix multiplies use, A = attention's own work):

- forward: 2N + A (a multiply-add per weight; attention's QK^T and AV over the tokens before it,
  half a sequence on average with a causal mask);
- backward, gradients of the activations: 2N + 2A, always (they flow through frozen weights too);
- backward, gradients of the weights: 2N for full fine-tuning only: frozen weights need none, so
  LoRA and QLoRA pay 2N + 2A where full fine-tuning pays 4N + 2A;
- the adapters of LoRA / QLoRA: about 6 FLOPs per trainable parameter (forward, both gradients),
  2 more when recomputed;
- gradient checkpointing runs the forward once more in the backward pass (2N + A);
- QLoRA dequantises every 4-bit weight in each pass (forward, recompute, backward), once per
  micro-batch whatever its length: a fixed cost per micro-batch, here in FLOP-equivalents per
  weight, spread over the micro-batch's tokens (short rows and batch 1 make QLoRA slow).

Time = FLOPs per token x trained tokens x epochs / (peak dense bf16 TFLOPS x utilisation). The
peak is the GPU's data-sheet figure (presets/gpus.json `peak_tflops`); utilisation and the
dequantisation cost are per backend (Unsloth's kernels against transformers + PEFT), fitted to
published throughputs: benchmarks/throughput_calibration.py prints each source, the model's
figure and the ratio, and benchmarks/RESULTS.md records them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Fitted in benchmarks/throughput_calibration.py (see its table and RESULTS.md).
UTILISATION = {"unsloth": 0.54, "peft": 0.40}
DEQUANT_FLOPS_PER_WEIGHT = {"unsloth": 1250.0, "peft": 950.0}
# Several GPUs (DDP / FSDP) do not add up exactly: gradients cross the link after every step.
MULTI_GPU_EFFICIENCY = 0.9
# A small model on a GPU is bound by kernel launches, not FLOPs: at least this long a micro-batch
# (forward and backward) whatever the FLOP count says.
MICRO_BATCH_FLOOR_S = 0.08


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    tokens_per_second: float  # all GPUs together
    flops_per_token: float
    peak_tflops: float
    utilisation: float
    tokens: int  # trained tokens, all epochs

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def matmul_params(info) -> int:
    """Weights a token passes through in matrix multiplies: every linear layer and the output head
    (tied or not), not the input embedding (a lookup). For a mixture of experts only the experts a
    token is routed to count."""
    head = info.vocab_size * info.hidden_size
    dense = info.params - info.embedding_params + head
    if info.num_experts and info.num_experts > 1:
        # Each expert is a gated MLP (three matrices); a token runs through experts_per_token of them.
        experts = info.num_layers * info.num_experts * 3 * info.hidden_size * info.intermediate_size
        experts = min(experts, dense)
        dense -= experts * (1 - info.experts_per_token / info.num_experts)
    return int(dense)


def attention_flops(info, tokens_per_row: float) -> float:
    """Forward attention FLOPs per token: QK^T and AV (2 FLOPs a multiply-add each) over half the row
    on average (causal)."""
    width = info.num_attention_heads * info.head_dim
    return 2.0 * info.num_layers * width * tokens_per_row


def flops_per_token(info, method: str, *, tokens_per_row: float, trainable_params: int = 0,
                    gradient_checkpointing: bool = True, tokens_per_micro_batch: float | None = None,
                    backend: str = "unsloth") -> float:
    """Training FLOPs (or FLOP-equivalents, for QLoRA's dequantisation) per trained token."""
    n = matmul_params(info)
    a = attention_flops(info, tokens_per_row)
    forward = 2 * n + a
    backward = 2 * n + 2 * a + (2 * n if method == "full" else 0)
    total = forward + backward + (forward if gradient_checkpointing else 0)
    if method != "full":
        total += (6 + (2 if gradient_checkpointing else 0)) * trainable_params
    if method == "qlora":
        passes = 3 if gradient_checkpointing else 2
        micro = max(tokens_per_micro_batch or tokens_per_row, 1.0)
        weights = info.quantizable_params or n
        total += passes * weights * DEQUANT_FLOPS_PER_WEIGHT[_backend(backend)] / micro
    return total


def estimate_time(info, method: str, *, peak_tflops: float, train_tokens: int, epochs: float = 1.0,
                  tokens_per_row: float, batch_size: int = 1, trainable_params: int = 0,
                  gradient_checkpointing: bool = True, backend: str = "unsloth", num_gpus: int = 1) -> TimeEstimate:
    """The estimate for `train_tokens` trained tokens a epoch (after truncation), `tokens_per_row` on
    average (attention and the micro-batch size depend on it), on `num_gpus` GPUs of `peak_tflops`."""
    if not peak_tflops or peak_tflops <= 0:
        raise ValueError("peak_tflops must be positive")
    backend = _backend(backend)
    tokens_per_row = max(float(tokens_per_row), 1.0)
    per_token = flops_per_token(
        info, method, tokens_per_row=tokens_per_row, trainable_params=trainable_params,
        gradient_checkpointing=gradient_checkpointing, tokens_per_micro_batch=tokens_per_row * max(batch_size, 1),
        backend=backend,
    )
    utilisation = UTILISATION[backend]
    gpus = max(int(num_gpus), 1)
    scale = gpus * (MULTI_GPU_EFFICIENCY if gpus > 1 else 1.0)
    delivered = peak_tflops * 1e12 * utilisation * scale
    tokens = int(math.ceil(max(train_tokens, 0) * max(epochs, 0.0)))
    micro_batches = tokens / (tokens_per_row * max(batch_size, 1) * gpus)
    seconds = max(tokens * per_token / delivered, micro_batches * MICRO_BATCH_FLOOR_S)
    return TimeEstimate(
        seconds=seconds, tokens_per_second=tokens / seconds if seconds else delivered / per_token,
        flops_per_token=per_token, peak_tflops=peak_tflops, utilisation=utilisation, tokens=tokens,
    )


def _backend(backend: str) -> str:
    return "peft" if backend == "peft" else "unsloth"  # "auto" runs Unsloth where it imports


def about(seconds: float) -> str:
    """'about 1 h 40 min', 'about 25 min', 'under a minute': an estimate, said as one."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 60:
        return "under a minute"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours >= 48:
        return f"about {seconds / 86400:.1f} days"
    if hours >= 10:
        return f"about {hours + (1 if rest >= 30 else 0)} h"
    rest = int(round(rest / 5) * 5)
    if rest == 60:
        hours, rest = hours + 1, 0
    return f"about {hours} h" + (f" {rest} min" if rest else "")
