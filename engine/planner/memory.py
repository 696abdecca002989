"""Peak training memory for full fine-tuning, LoRA and QLoRA, as a sum of named parts.

Every part is a formula over the model's real shapes (from `engine.planner.architecture`), so a 256k
vocabulary or a wide MLP shows up where it belongs. The few constants that are not pure
arithmetic (activation bytes per token, loss-kernel bytes per logit, runtime overhead) were set
against published peak-memory measurements; `benchmarks/memory_estimate.py` prints each
calibration point and the estimator's error on it.

The backend moves the peak more than any detail of the formula: `backend="unsloth"` (offloaded
checkpoints, fused cross-entropy, 16-bit frozen embeddings) and `backend="peft"` (checkpoints on the
device, full logits in the loss, QLoRA's non-4-bit parameters in fp32) each get their own terms from
`engine.planner.memory_terms`; "auto" plans for Unsloth. With no backend the plain terms are used
with each knob as given (`loss_kernel` "eager" unless told), as for other frameworks' figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.errors import UserError
from engine.planner.architecture import ModelInfo
from engine.planner.distributed_terms import (
    SHARDED_PARTS,
    STRATEGIES,  # noqa: F401  (re-exported)
    check_strategy,
    gathered_bytes,
    load_bytes,
    per_gpu_model_states,
)
from engine.planner.memory_terms import (
    BACKENDS,
    FP32,
    HALF,
    activation_bytes,
    activation_bytes_per_token_layer,  # noqa: F401  (re-exported: part of this module's API)
    kernels_for,
    logit_bytes,
    overhead_gb,
)
from engine.planner.target_modules import count_trainable_params, resolve_target_modules

GIB = 1024**3
METHODS = ("full", "lora", "qlora")
COMPONENTS = ("weights", "adapter", "gradients", "optimizer", "activations", "logits", "overhead")
# Parts only a run on several GPUs has: FSDP's gathered layers (and root), DDP's gradient buckets,
# and under QLoRA + FSDP the 4-bit layers' quantization states, whole on every GPU.
DISTRIBUTED_COMPONENTS = ("gathered", "buckets", "quant_states")

# Training runs in 16 bit (bf16, or fp16 on GPUs older than Ampere): 2 bytes a weight (HALF).
# NF4 with double quantisation (QLoRA's default): 4 bits, plus an 8-bit absmax per 64-weight block,
# plus an fp32 scale per 256 absmax values: 4 + 8/64 + 32/(64*256) = 4.127 bits a weight.
NF4_DOUBLE_QUANT_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8
# Of which the packed 4-bit weight itself (what FSDP shards); the rest is the quantization state.
NF4_PACKED_BYTES = 4 / 8

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
    backend: str | None = None  # "unsloth" or "peft"; None for the plain terms
    loss_kernel: str = "eager"
    # Several GPUs: the estimate is per GPU. "none" (one GPU), "ddp" (a full copy on each) or "fsdp"
    # (weights, adapter, gradients and optimizer divided by world_size, plus the gathered layers).
    strategy: str = "none"
    world_size: int = 1
    # FSDP's parts before the division: {part: GiB for the whole model}, shown as "whole / N".
    unsharded: dict[str, float] = field(default_factory=dict)
    # FSDP with CPU offload: the sharded parts live in RAM (GiB a process), not on the GPU.
    cpu_offload: bool = False
    offloaded_gb: float = 0.0
    # FSDP's loading, before the model is sharded (engine.planner.distributed_terms): the GPU peak a
    # process while loading (load_gb), and the RAM a process holds then (load_ram_gb). total_gb is
    # the larger of the training step (train_gb) and load_gb.
    train_gb: float = 0.0
    load_gb: float = 0.0
    load_ram_gb: float = 0.0

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
    backend: str | None = None,
    loss_kernel: str | None = None,
    adapter_dtype: str = "float32",
    strategy: str = "none",
    world_size: int = 1,
    cpu_offload: bool = False,
    prefetch: bool = True,
) -> MemoryEstimate:
    """Estimated peak memory (GiB) of one training step of `method` on `info`.

    `backend` is "unsloth", "peft", "auto" (planned as Unsloth) or None (the plain terms).
    `gradient_checkpointing` is True (checkpoints stay on the device), False, or "unsloth" (Unsloth's
    mode, which offloads the checkpoints to RAM; plain True on the peft backend and on a CPU).
    `device="cpu"` estimates RAM for CPU training. `loss_kernel` ("eager", "chunked", "fused",
    "cpu_chunked") overrides the backend's; `adapter_dtype` is "float32" (PEFT's default,
    autocast_adapter_dtype) or "bfloat16".

    On several GPUs (`world_size` processes in all, `strategy` "ddp" or "fsdp") the estimate is for
    one GPU: see `engine.planner.distributed_terms`. `cpu_offload` (FSDP only) keeps the sharded
    parts in RAM; `prefetch` gathers the next layer while one computes (FSDP2's default).
    """
    _check(method, r, batch_size, seq_len, gradient_checkpointing, optim, device)
    check_strategy(strategy, world_size, cpu_offload)
    if adapter_dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f'adapter_dtype must be "float32" or "bfloat16", not {adapter_dtype!r}.')
    kernels = kernels_for(backend, device, method, gradient_checkpointing, loss_kernel)
    adapter_bytes = FP32 if adapter_dtype == "float32" else HALF
    tokens = batch_size * seq_len
    if device == "cpu" and "8bit" in optim:
        optim = "adamw_torch"  # Unsloth swaps 8-bit AdamW for a fused torch AdamW on CPU
    state_bytes = _OPTIMIZER_BYTES.get(optim, _UNKNOWN_OPTIMIZER)
    # On a GPU training runs in 16 bit; on a CPU both backends load fp32.
    word = FP32 if device == "cpu" else HALF

    quant_states = 0.0
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
            quant_states = info.quantizable_params * (NF4_DOUBLE_QUANT_BYTES - NF4_PACKED_BYTES)
            kept = FP32 if kernels.fp32_unquantized else word  # peft's prepare_model_for_kbit_training
            weights = info.quantizable_params * NF4_DOUBLE_QUANT_BYTES + (info.params - info.quantizable_params) * kept
        else:
            weights = info.params * word
        # PEFT keeps adapter weights in fp32 even on a 16-bit base (autocast_adapter_dtype).
        adapter = trainable * adapter_bytes
        gradients = trainable * adapter_bytes
        optimizer = trainable * state_bytes[adapter_bytes]

    sharded = strategy == "fsdp" and world_size > 1
    # FSDP shards the packed 4-bit weights; their quantization states are not parameters and stay whole.
    replicated = quant_states if sharded else 0.0
    states = {"weights": weights - replicated, "adapter": adapter, "gradients": gradients, "optimizer": optimizer}
    gathered = 0.0
    if sharded:
        kept = FP32 if kernels.fp32_unquantized else word
        gathered = gathered_bytes(info, method, word=word, kept=kept, trainable=trainable,
                                  grad_bytes=word if method == "full" else adapter_bytes, prefetch=prefetch,
                                  nf4_bytes=NF4_PACKED_BYTES)
    per_gpu = per_gpu_model_states(states, strategy, world_size, gathered=gathered, cpu_offload=cpu_offload)
    if replicated:
        per_gpu["quant_states"] = replicated
    parts = {
        **{name: per_gpu[name] for name in states},
        "activations": activation_bytes(info, tokens, kernels.checkpointing, word, device),
        "logits": logit_bytes(info, tokens, kernels.loss_kernel, word),
    }
    for name in DISTRIBUTED_COMPONENTS:
        if per_gpu.get(name):
            parts[name] = per_gpu[name]
    subtotal = sum(parts.values()) / GIB
    overhead = overhead_gb(subtotal, device)
    components = {name: round(value / GIB, 3) for name, value in parts.items()}
    components["overhead"] = round(overhead, 3)
    unsharded = {name: round(states[name] / GIB, 3) for name in SHARDED_PARTS if sharded and states[name]}
    offloaded = sum(states.values()) / world_size / GIB if sharded and cpu_offload else 0.0
    train_gb = round(subtotal + overhead, 2)
    load_gb = load_ram_gb = 0.0
    if sharded and device == "cuda":
        on_gpu, in_ram = load_bytes(info, kernels.backend, weights, world_size, cpu_offload=cpu_offload, word=word,
                                    kept=FP32 if kernels.fp32_unquantized else word, method=method,
                                    nf4_bytes=NF4_PACKED_BYTES, replicated=replicated)
        if on_gpu:
            load_gb = round(on_gpu / GIB + overhead_gb(on_gpu / GIB, device), 2)
        load_ram_gb = round(in_ram / GIB, 3)
    return MemoryEstimate(
        method=method,
        total_gb=max(train_gb, load_gb),
        components=components,
        trainable_params=int(trainable),
        r=None if method == "full" else r,
        target_modules=targets,
        batch_size=batch_size,
        seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing,
        optim=optim,
        device=device,
        backend=kernels.backend,
        loss_kernel=kernels.loss_kernel,
        strategy=strategy if world_size > 1 else "none",
        world_size=world_size,
        unsharded=unsharded,
        cpu_offload=bool(sharded and cpu_offload),
        offloaded_gb=round(offloaded, 3),
        train_gb=train_gb,
        load_gb=load_gb,
        load_ram_gb=load_ram_gb,
    )


def estimate_all(info: ModelInfo, **kwargs) -> dict[str, MemoryEstimate]:
    """The three methods with the same settings."""
    return {method: estimate_memory(info, method, **kwargs) for method in METHODS}


def estimate_by_backend(info: ModelInfo, method: str, **kwargs) -> dict[str, MemoryEstimate]:
    """The same step on each backend: {"unsloth": ..., "peft": ...}."""
    kwargs.pop("backend", None)
    return {backend: estimate_memory(info, method, backend=backend, **kwargs) for backend in BACKENDS}


def estimate_for_session(info: ModelInfo, session, device: str = "cuda", backend: str | None = None) -> MemoryEstimate:
    """The estimate for a session as it would run: its method, adapter, batch, sequence length,
    checkpointing, optimizer and backend ("auto" planned as Unsloth; `backend` overrides it)."""
    t = session.training
    return estimate_memory(
        info, session.method, r=session.lora.r, target_modules=session.lora.target_modules,
        batch_size=t.per_device_train_batch_size, seq_len=session.model.max_seq_length,
        gradient_checkpointing=t.gradient_checkpointing, optim=t.optim, device=device,
        backend=backend or session.backend,
    )


def _check(method, r, batch_size, seq_len, checkpointing, optim, device) -> None:
    if method not in METHODS:
        raise UserError(f'method must be "full", "lora" or "qlora", not {method!r}.')
    for label, value in (("lora.r", r), ("per_device_train_batch_size", batch_size), ("max_seq_length", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive whole number, not {value!r}.")
    if checkpointing not in (True, False, "unsloth"):
        raise UserError(f'gradient_checkpointing must be true, false or "unsloth", not {checkpointing!r}.')
    if device not in ("cuda", "cpu"):
        raise UserError(f'device must be "cuda" or "cpu", not {device!r}.')

