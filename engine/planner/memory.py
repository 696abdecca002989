"""Peak training memory for full fine-tuning, LoRA and QLoRA, as a sum of named parts.

Every part is a formula over the model's real shapes (from `engine.planner.architecture`), so a 256k
vocabulary or a wide MLP shows up where it belongs. The few constants that are not pure
arithmetic (activation bytes per token, loss-kernel bytes per logit, runtime overhead) were set
against published peak-memory measurements; `benchmarks/memory_estimate.py` prints each
calibration point and the estimator's error on it.

Defaults describe the plain transformers + PEFT + TRL path (the `peft` backend): gradient
checkpointing keeps each layer's input on the GPU and the loss materialises the full logits in
fp32. Unsloth is leaner on both (`gradient_checkpointing="unsloth"`, `loss_kernel="fused"`), so a
plan made with the defaults fits either backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.errors import UserError
from engine.planner.architecture import ModelInfo
from engine.planner.target_modules import count_trainable_params, resolve_target_modules

GIB = 1024**3
METHODS = ("full", "lora", "qlora")
COMPONENTS = ("weights", "adapter", "gradients", "optimizer", "activations", "logits", "overhead")

# Training runs in 16 bit (bf16, or fp16 on GPUs older than Ampere): 2 bytes a weight.
HALF = 2
FP32 = 4
# NF4 with double quantisation (QLoRA's default): 4 bits, plus an 8-bit absmax per 64-weight block,
# plus an fp32 scale per 256 absmax values: 4 + 8/64 + 32/(64*256) = 4.127 bits a weight.
NF4_DOUBLE_QUANT_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8

# Optimizer state bytes per trainable parameter, by TrainingArguments `optim`, for 16-bit and
# fp32 parameters. torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype; the
# bitsandbytes 8-bit AdamW keeps both in one byte each.
_OPTIMIZER_BYTES = {
    "adamw_torch": {HALF: 2 * HALF, FP32: 2 * FP32},
    "adamw_torch_fused": {HALF: 2 * HALF, FP32: 2 * FP32},
    "adamw_hf": {HALF: 2 * HALF, FP32: 2 * FP32},
    "adamw_apex_fused": {HALF: 2 * HALF, FP32: 2 * FP32},
    "adamw_32bit": {HALF: 2 * FP32, FP32: 2 * FP32},
    "paged_adamw_32bit": {HALF: 2 * FP32, FP32: 2 * FP32},
    "adamw_8bit": {HALF: 2, FP32: 2},
    "adamw_bnb_8bit": {HALF: 2, FP32: 2},
    "paged_adamw_8bit": {HALF: 2, FP32: 2},
    "lion_8bit": {HALF: 1, FP32: 1},
    "paged_lion_8bit": {HALF: 1, FP32: 1},
    "lion_32bit": {HALF: FP32, FP32: FP32},
    "adafactor": {HALF: 0.1, FP32: 0.1},  # factored second moment: rows + columns, not rows x columns
    "sgd": {HALF: 0, FP32: 0},
}
OPTIMIZERS = tuple(_OPTIMIZER_BYTES)
# An optimizer the table does not know is costed like 32-bit AdamW: too much rather than too little.
_UNKNOWN_OPTIMIZER = {HALF: 2 * FP32, FP32: 2 * FP32}

# Activation bytes kept for backward per token and layer, as a multiple of the tensors one
# decoder layer saves in eager PyTorch: norm inputs and outputs (4h), q/k/v before and after
# rotary embedding and the attention output (3 q + 3 kv), the MLP's gate, up, act(gate) and their
# product (4i). Fitted to the torchtune Llama 3.2 3B runs without and with checkpointing.
ACTIVATION_FACTOR = 1.0
# Bytes per logit (batch x seq x vocab elements) the loss holds at its peak:
#   eager   - transformers' loss: bf16 logits, their fp32 copy and the fp32 log-softmax (2 + 4 + 4)
#   chunked - the same in eight chunks, one chunk alive at a time (torchtune's compiled chunked loss)
#   fused   - Unsloth's fused cross-entropy: only one chunk of FUSED_CHUNK_TOKENS tokens in bf16 + fp32
LOSS_KERNEL_BYTES = {"eager": 10.0, "chunked": 10.0 / 8, "fused": HALF + FP32}
FUSED_CHUNK_TOKENS = 1024
# CUDA context and cuBLAS workspaces (not counted by torch's memory statistics), and the caching
# allocator's fragmentation on a GPU; the Python process and torch's libraries in RAM on a CPU.
GPU_CONTEXT_GB = 0.75
GPU_FRAGMENTATION = 0.06
CPU_OVERHEAD_GB = 1.5


@dataclass
class MemoryEstimate:
    method: str
    total_gb: float
    components: dict[str, float]
    trainable_params: int = 0
    r: int | None = None
    target_modules: list[str] = field(default_factory=list)
    batch_size: int = 4
    seq_len: int = 512
    gradient_checkpointing: bool | str = True
    optim: str = "adamw_8bit"
    device: str = "cuda"

    def fits(self, available_gb: float, headroom: float = 0.9) -> bool:
        """True when the estimate uses at most `headroom` of `available_gb`."""
        return self.total_gb <= available_gb * headroom

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_memory(
    info: ModelInfo,
    method: str,
    *,
    r: int = 16,
    target_modules=None,
    batch_size: int = 4,
    seq_len: int = 512,
    gradient_checkpointing: bool | str = True,
    optim: str = "adamw_8bit",
    device: str = "cuda",
    loss_kernel: str = "eager",
    adapter_dtype: str = "float32",
) -> MemoryEstimate:
    """Estimated peak memory (GiB) of one training step of `method` on `info`.

    `gradient_checkpointing` is True (checkpoints stay on the GPU), False, or "unsloth" (Unsloth's
    mode, which offloads the checkpoints to RAM). `device="cpu"` estimates RAM for CPU training.
    `loss_kernel` is "eager" (transformers), "chunked" or "fused" (Unsloth); `adapter_dtype` is
    "float32" (PEFT's default, autocast_adapter_dtype) or "bfloat16".
    """
    _check(method, r, batch_size, seq_len, gradient_checkpointing, optim, device, loss_kernel)
    if adapter_dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f'adapter_dtype must be "float32" or "bfloat16", not {adapter_dtype!r}.')
    adapter_bytes = FP32 if adapter_dtype == "float32" else HALF
    tokens = batch_size * seq_len
    if device == "cpu" and "8bit" in optim:
        optim = "adamw_torch"  # Unsloth swaps 8-bit AdamW for a fused torch AdamW on CPU
    state_bytes = _OPTIMIZER_BYTES.get(optim, _UNKNOWN_OPTIMIZER)
    # On a GPU training runs in 16 bit; on a CPU Unsloth loads fp32 (dtype=None) unless told otherwise.
    word = FP32 if device == "cpu" else HALF

    if method == "full":
        trainable = info.params
        targets: list[str] = []
        weights = info.params * word
        adapter = 0.0
        gradients = info.params * word
        optimizer = info.params * state_bytes[word]
    else:
        targets = resolve_target_modules(info, target_modules)
        trainable = count_trainable_params(info, targets, r)
        if method == "qlora":
            weights = info.quantizable_params * NF4_DOUBLE_QUANT_BYTES + (info.params - info.quantizable_params) * word
        else:
            weights = info.params * word
        # PEFT keeps adapter weights in fp32 even on a 16-bit base (autocast_adapter_dtype).
        adapter = trainable * adapter_bytes
        gradients = trainable * adapter_bytes
        optimizer = trainable * state_bytes[adapter_bytes]

    activations = _activation_bytes(info, batch_size, seq_len, gradient_checkpointing) * word / HALF
    logits = _logit_bytes(info, tokens, loss_kernel, word)
    parts = {
        "weights": weights,
        "adapter": adapter,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
    }
    subtotal = sum(parts.values()) / GIB
    if device == "cpu":
        overhead = CPU_OVERHEAD_GB
    else:
        overhead = GPU_CONTEXT_GB + GPU_FRAGMENTATION * subtotal
    components = {name: round(value / GIB, 3) for name, value in parts.items()}
    components["overhead"] = round(overhead, 3)
    return MemoryEstimate(
        method=method,
        total_gb=round(subtotal + overhead, 2),
        components=components,
        trainable_params=int(trainable),
        r=None if method == "full" else r,
        target_modules=targets,
        batch_size=batch_size,
        seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing,
        optim=optim,
        device=device,
    )


def estimate_all(info: ModelInfo, **kwargs) -> dict[str, MemoryEstimate]:
    """The three methods with the same settings."""
    return {method: estimate_memory(info, method, **kwargs) for method in METHODS}


def activation_bytes_per_token_layer(info: ModelInfo) -> float:
    """Bytes one decoder layer keeps for backward per token, without checkpointing."""
    h = info.hidden_size
    q = info.num_attention_heads * info.head_dim or h
    kv = info.num_key_value_heads * info.head_dim or h
    i = info.intermediate_size * info.experts_per_token  # a token runs through top-k experts
    return ACTIVATION_FACTOR * HALF * (4 * h + 3 * q + 3 * kv + 4 * i)


def _activation_bytes(info: ModelInfo, batch_size: int, seq_len: int, checkpointing) -> float:
    tokens = batch_size * seq_len
    per_layer = activation_bytes_per_token_layer(info) * tokens
    hidden_state = HALF * info.hidden_size * tokens  # one layer's input or output
    if checkpointing is False:
        return info.num_layers * per_layer + 2 * hidden_state
    # Backward recomputes one layer at a time: that layer's activations plus the gradient flowing
    # through the residual stream and the hidden states around it.
    recompute = per_layer + 3 * hidden_state
    if checkpointing == "unsloth":
        return recompute  # the saved layer inputs live in RAM
    return info.num_layers * hidden_state + recompute


def _logit_bytes(info: ModelInfo, tokens: int, loss_kernel: str, word: int = HALF) -> float:
    per_logit = LOSS_KERNEL_BYTES[loss_kernel]
    if loss_kernel == "fused":
        tokens = min(tokens, FUSED_CHUNK_TOKENS)
    if loss_kernel != "chunked":
        per_logit += word - HALF  # fp32 logits on a CPU
    return tokens * info.vocab_size * per_logit


def _check(method, r, batch_size, seq_len, checkpointing, optim, device, loss_kernel) -> None:
    if method not in METHODS:
        raise UserError(f'method must be "full", "lora" or "qlora", not {method!r}.')
    for label, value in (("lora.r", r), ("per_device_train_batch_size", batch_size), ("max_seq_length", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive whole number, not {value!r}.")
    if checkpointing not in (True, False, "unsloth"):
        raise UserError(f'gradient_checkpointing must be true, false or "unsloth", not {checkpointing!r}.')
    if device not in ("cuda", "cpu"):
        raise UserError(f'device must be "cuda" or "cpu", not {device!r}.')
    if loss_kernel not in LOSS_KERNEL_BYTES:
        raise UserError(f"loss_kernel must be one of {', '.join(LOSS_KERNEL_BYTES)}, not {loss_kernel!r}.")
