"""The parts of the peak-memory estimate that depend on how a backend trains: where gradient
checkpoints live, how the loss holds the logits, and what the frozen weights are kept in.

  unsloth, GPU  FastLanguageModel. Checkpointing "unsloth" offloads each layer's input to RAM (True
                keeps them on the GPU, as transformers does); the loss is Unsloth's fused
                cross-entropy (Apple's Cut Cross Entropy): one chunk of logits at a time; frozen
                embeddings and output head stay 16 bit under QLoRA.
  unsloth, CPU  unsloth_zoo.cpu: fp32 weights, plain transformers checkpointing for True and
                "unsloth" alike (nothing to offload to), and a chunked linear cross-entropy whose
                largest block is UNSLOTH_CPU_CE_CHUNK_ELEMENTS (16M) fp32 logits.
  peft          transformers + PEFT + TRL. Checkpointing keeps each layer's input on the device
                ("unsloth" means plain True there); the loss materialises the full logits; QLoRA's
                prepare_model_for_kbit_training casts every parameter that is not 4-bit (embeddings,
                output head, norms) to fp32.

Calibration (benchmarks/memory_estimate.py prints every point with its error):
  - LOSS_KERNEL_BYTES["eager"]: the Hugging Face + FA2 column of Unsloth's context-length table
    (Llama 3.1 8B QLoRA r 32, batch 1) grows 2.65 MB a token (40 GB for 16,190 more tokens from
    the 40 GB to the 80 GB card); checkpoints and one recomputed layer account for 0.47 MB of it,
    the loss for the rest: 16 bytes a logit x 128,256 logits a token.
  - the unsloth column grows 0.23 MB a token: one recomputed layer and three hidden states, nothing
    per layer (the checkpoints are in RAM), and a loss that does not grow with the sequence.
  - the CPU terms: this machine's runs of both backends' workers (RESULTS.md, section 5b). On a CPU
    the peak is the worker's RSS, and glibc keeps the blocks that each layer's activations free
    (the mmap threshold rises to a freed block's size, so later blocks come from a heap that is not
    trimmed): RSS grows with about CPU_RETAINED of the un-checkpointed activations whether or not
    checkpointing is on. Seen in-process on the demo model: with MALLOC_MMAP_THRESHOLD_=131072 a
    step's peak over the loaded process fell from 1.03 to 0.21 MB a token, about the live tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UserError

HALF = 2
FP32 = 4
BACKENDS = ("unsloth", "peft")

# Activation bytes kept for backward per token and layer, as a multiple of the tensors one
# decoder layer saves in eager PyTorch: norm inputs and outputs (4h), q/k/v before and after
# rotary embedding and the attention output (3 q + 3 kv), the MLP's gate, up, act(gate) and their
# product (4i). Fitted to the torchtune Llama 3.2 3B runs without and with checkpointing.
ACTIVATION_FACTOR = 1.0
# Bytes per logit (batch x seq x vocab elements) the loss holds at its peak:
#   eager   - transformers' ForCausalLMLoss on 16-bit logits: the bf16 logits kept in the output (2),
#             their fp32 upcast (4), its shifted contiguous copy (4), the fp32 log-softmax kept for
#             backward (4), and the bf16 gradient handed back to the output head (2): the
#             transformers of the published figures. (Today's ForCausalLMLoss shifts the labels, not
#             the logits, and TRL 1.15's SFTTrainer computes the loss on a GPU through a chunked
#             fused LM head: on the peft backend the estimate may be high at long context until a
#             GPU run says otherwise.) On a 32-bit model (CPU) the logits are their own upcast:
#             logits, log-softmax, and the gradient in and out of it, 4 bytes each: 16 again
#   chunked - torchtune's compiled chunked loss: the bf16 + fp32 + log-softmax copies, eight chunks
#   fused   - Unsloth's fused cross-entropy: one chunk of FUSED_CHUNK_TOKENS tokens in bf16 + fp32
#   cpu_chunked - Unsloth's CPU chunked cross-entropy: one fp32 block of CPU_CE_CHUNK_ELEMENTS,
#             its exp and its gradient, whatever the sequence (unsloth_zoo/cpu/ops.py)
LOSS_KERNEL_BYTES = {"eager": 16.0, "chunked": 10.0 / 8, "fused": HALF + FP32, "cpu_chunked": 3 * FP32}
LOSS_KERNELS = tuple(LOSS_KERNEL_BYTES)
FUSED_CHUNK_TOKENS = 1024
CPU_CE_CHUNK_ELEMENTS = 16 * 1024 * 1024
# CUDA context and cuBLAS workspaces (not counted by torch's memory statistics), and the caching
# allocator's fragmentation on a GPU; the Python process and torch's libraries in RAM on a CPU.
GPU_CONTEXT_GB = 0.75
GPU_FRAGMENTATION = 0.06
# On a CPU: Python, torch, transformers, TRL (and Unsloth) and the data pipeline in the worker; this
# machine's workers: 1.1 GB after loading the demo model, less its weights.
CPU_OVERHEAD_GB = 1.0
# Share of the un-checkpointed activations glibc keeps in a CPU worker's RSS: the slope of this
# machine's unsloth LoRA runs (1.07 MB a token from 256 to 2,048 tokens) over the 1.29 MB a token
# of the demo model's 30 layers in fp32.
CPU_RETAINED = 0.8
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024**2  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit (mallopt(3))


@dataclass(frozen=True)
class Kernels:
    """How one backend trains on one device, as far as memory goes."""

    backend: str | None  # None: the formula's plain terms, each knob as given (other frameworks)
    checkpointing: str  # "none", "device" (checkpoints where the model is) or "offload" (in RAM)
    loss_kernel: str
    fp32_unquantized: bool = False  # QLoRA: the parameters that are not 4-bit are kept in fp32


def planned_backend(backend: str | None) -> str | None:
    """The backend an estimate is for: "auto" runs Unsloth wherever it imports, so it plans for it."""
    if backend is None:
        return None
    if backend == "auto":
        return "unsloth"
    if backend not in BACKENDS:
        raise UserError(f'backend must be "auto", "unsloth" or "peft", not {backend!r}.')
    return backend


def kernels_for(backend: str | None, device: str, method: str, gradient_checkpointing, loss_kernel: str | None = None) -> Kernels:
    """The kernels `backend` uses on `device`; an explicit `loss_kernel` overrides the backend's."""
    backend = planned_backend(backend)
    if loss_kernel is not None and loss_kernel not in LOSS_KERNEL_BYTES:
        raise UserError(f"loss_kernel must be one of {', '.join(LOSS_KERNELS)}, not {loss_kernel!r}.")
    if gradient_checkpointing is False:
        mode = "none"
    elif gradient_checkpointing == "unsloth" and backend in ("unsloth", None) and device == "cuda":
        mode = "offload"
    else:
        mode = "device"  # True; "unsloth" on the peft backend and on Unsloth's CPU backend
    if backend == "unsloth":
        default_loss = "fused" if device == "cuda" else "cpu_chunked"
    else:
        default_loss = "eager"
    return Kernels(
        backend=backend,
        checkpointing=mode,
        loss_kernel=loss_kernel or default_loss,
        fp32_unquantized=backend == "peft" and method == "qlora",
    )


def _layer_tensors(info) -> tuple[tuple[int, int], ...]:
    """(how many, width) of the tensors one decoder layer saves for backward, per token."""
    h = info.hidden_size
    q = info.num_attention_heads * info.head_dim or h
    kv = info.num_key_value_heads * info.head_dim or h
    i = info.intermediate_size * info.experts_per_token  # a token runs through top-k experts
    return (4, h), (3, q), (3, kv), (4, i)


def activation_bytes_per_token_layer(info) -> float:
    """Bytes one decoder layer keeps for backward per token, without checkpointing, in 16 bit."""
    return ACTIVATION_FACTOR * HALF * sum(count * width for count, width in _layer_tensors(info))


def activation_bytes(info, tokens: int, checkpointing: str, word: int = HALF, device: str = "cuda") -> float:
    """Activations alive at the peak of backward, in bytes, for `tokens` tokens in the step; on a
    CPU, what they leave in the worker's RSS."""
    per_layer = activation_bytes_per_token_layer(info) * tokens * word / HALF
    hidden_state = word * info.hidden_size * tokens  # one layer's input or output
    if device == "cpu":
        retained = CPU_RETAINED * info.num_layers * _heap_bytes_per_layer(info, tokens, word)
        if checkpointing == "none":
            return info.num_layers * per_layer + retained + 2 * hidden_state
        return retained
    if checkpointing == "none":
        return info.num_layers * per_layer + 2 * hidden_state
    # Backward recomputes one layer at a time: that layer's activations plus the gradient flowing
    # through the residual stream and the hidden states around it.
    recompute = per_layer + 3 * hidden_state
    if checkpointing == "offload":
        return recompute  # the saved layer inputs live in RAM
    return info.num_layers * hidden_state + recompute


def _heap_bytes_per_layer(info, tokens: int, word: int) -> float:
    """The part of one layer's activations glibc serves from its heap: blocks under its largest mmap
    threshold (32 MiB on 64-bit Linux); bigger blocks are mapped and given back when freed."""
    blocks = ((count, tokens * width * word) for count, width in _layer_tensors(info))
    return ACTIVATION_FACTOR * sum(count * block for count, block in blocks if block < GLIBC_MMAP_THRESHOLD_MAX)


def logit_bytes(info, tokens: int, loss_kernel: str, word: int = HALF) -> float:
    """What the loss holds at its peak, in bytes."""
    per_logit = LOSS_KERNEL_BYTES[loss_kernel]
    if loss_kernel == "cpu_chunked":
        rows = max(16, CPU_CE_CHUNK_ELEMENTS // max(1, info.vocab_size))
        return min(tokens, rows) * info.vocab_size * per_logit
    if loss_kernel == "fused":
        tokens = min(tokens, FUSED_CHUNK_TOKENS)
        per_logit += word - HALF  # 32-bit logits from a 32-bit model
    return tokens * info.vocab_size * per_logit


def overhead_gb(subtotal_gb: float, device: str) -> float:
    """What the step's tensors do not count: the CUDA context and fragmentation, or the process on a CPU."""
    if device == "cpu":
        return CPU_OVERHEAD_GB
    return GPU_CONTEXT_GB + GPU_FRAGMENTATION * subtotal_gb
