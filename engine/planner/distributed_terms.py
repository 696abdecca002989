"""What one GPU holds when a run is spread over several: the per-GPU terms of the estimate.

  none  one process on one GPU: the estimate as it always was.
  ddp   DistributedDataParallel: every GPU keeps a full copy of the model states (frozen and
        trainable weights, gradients, optimizer state) and the reducer's flat gradient buckets,
        a second copy of the gradients that the all-reduce works on ("buckets").
  fsdp  FSDP2 / ZeRO-3 (P_os+g+p in the ZeRO paper): weights, adapter, gradients and optimizer
        state are divided by the world size (every GPU of every node). On top, each GPU holds what
        is gathered for the computation ("gathered"): one decoder layer at a time, two with
        prefetch (the next layer's all-gather overlaps this layer's compute: FSDP2's default), each
        with its unsharded gradient before the reduce-scatter, and the root module (input
        embedding, output head, final norm), which FSDP2 keeps gathered from forward to backward.
        QLoRA + FSDP shards the packed 4-bit weights themselves (bnb_4bit_quant_storage = the
        compute dtype), so a gathered layer is a 4-bit layer; their quantization states (absmax
        and the NF4 code, about 1/32 of the 4-bit bytes) are not parameters and stay whole on every
        GPU ("quant_states"). With CPU offload (FSDP2's CPUOffloadPolicy,
        Unsloth's UNSLOTH_FSDP2_CPU_OFFLOAD) the sharded parts live in RAM, and the GPU holds only
        what is gathered, the activations and the logits.

Activations and logits are per GPU whatever the strategy: each GPU runs its own micro-batch.

Loading comes before sharding, and under FSDP its peak can be the higher one ("load"):
  unsloth  every rank loads the whole model onto its own GPU and Unsloth shards it afterwards:
           "4-bit / 8-bit QLoRA under native FSDP2 still loads the full quantized model on every
           rank" (unsloth/models/fsdp2_load.py, _QUANTIZED_HINT; its sharded loading is opt-in and
           16-bit only, and fsdp2_native.py refuses a 4-bit model on the CPU). So a GPU holds the
           whole weights once, whatever the world size: 36.8 GB of 4-bit weights for a 70B.
  peft     under FSDP every rank loads the whole model into RAM (engine.training.backends.peft_backend)
           and `fully_shard` moves one unit (a decoder layer, then the root) at a time to the GPU
           and keeps its shard there (or in RAM, with CPU offload): the GPU holds the shards placed
           so far and one whole unit; the RAM holds the whole model in every process of a node.
So QLoRA + FSDP on the peft backend holds about 37 GB of RAM a process for a 70B, and with CPU
offload about 3 GB a GPU beside the activations: the known recipe for a 70B on two 24 GB cards
(ms-swift's examples/pytorch/llm/scripts/llama2_70b_chat/qlora_fsdp: "2 GPU * 24G", FSDP with
offload, bnb_4bit_quant_storage bfloat16; Answer.AI's fsdp_qlora with --use_cpu_offload).

Checked in tests/test_distributed_plan.py against the ZeRO paper (Rajbhandari et al. 2019, 7.5B
parameters, 16 bytes a parameter: 120 GB on one GPU, 1.88 GB a GPU under P_os+g+p on 64) and
against DeepSpeed's `estimate_zero3_model_states_mem_needs` (18 bytes a parameter divided by the
GPUs, plus 4 bytes a parameter of the largest layer).
"""

from __future__ import annotations

from engine.errors import UserError

STRATEGIES = ("none", "ddp", "fsdp")
SHARDED_PARTS = ("weights", "adapter", "gradients", "optimizer")
# Layers gathered at once under FSDP: the one computing and, with prefetch, the next.
GATHERED_LAYERS = {True: 2, False: 1}


def check_strategy(strategy: str, world_size: int, cpu_offload: bool = False) -> None:
    if strategy not in STRATEGIES:
        raise UserError(f'strategy must be "none", "ddp" or "fsdp", not {strategy!r}.')
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise UserError(f"The number of GPUs must be a positive whole number, not {world_size!r}.")
    if strategy == "none" and world_size > 1:
        raise UserError(f'strategy "none" is one GPU; {world_size} GPUs need "ddp" or "fsdp".')
    if cpu_offload and strategy != "fsdp":
        raise UserError('CPU offload shards the model states into RAM: it needs strategy "fsdp".')


def per_gpu_model_states(states: dict[str, float], strategy: str, world_size: int, *, gathered: float = 0.0,
                         cpu_offload: bool = False) -> dict[str, float]:
    """The model states one GPU holds, in the units of `states` ({"weights", "adapter", "gradients",
    "optimizer"}: the whole model's), plus "gathered" (FSDP) or "buckets" (DDP) where they apply."""
    check_strategy(strategy, world_size, cpu_offload)
    if world_size == 1 or strategy == "none":
        return dict(states)
    if strategy == "ddp":
        return {**states, "buckets": states.get("gradients", 0.0)}
    shard = 0.0 if cpu_offload else 1.0 / world_size
    return {**{name: value * shard for name, value in states.items()}, "gathered": gathered}


def gathered_bytes(info, method: str, *, word: int, kept: int, trainable: int, grad_bytes: float, prefetch: bool,
                   nf4_bytes: float) -> float:
    """Bytes FSDP gathers on each GPU at its peak: `GATHERED_LAYERS` decoder layers (their weights in
    the bytes they are stored in, their trainable parameters and those parameters' unsharded
    gradients) and the root module (embedding and output head), gathered for the whole step."""
    layers = max(1, info.num_layers)
    root = info.embedding_params
    layer_params = max(0, info.params - root) / layers
    if method == "qlora":
        quantized = info.quantizable_params / layers
        layer_weights = quantized * nf4_bytes + max(0.0, layer_params - quantized) * kept
        root_bytes = root * kept
    else:
        layer_weights = layer_params * word
        root_bytes = root * word
    if method == "full":
        layer_trainable = layer_params * grad_bytes  # the gradient; the weight is counted above
        root_bytes += root * grad_bytes
    else:
        layer_trainable = trainable / layers * 2 * grad_bytes  # the adapter and its gradient
    return GATHERED_LAYERS[bool(prefetch)] * (layer_weights + layer_trainable) + root_bytes


def load_bytes(info, backend: str | None, weights: float, world_size: int, *, cpu_offload: bool, word: int,
               kept: int, method: str, nf4_bytes: float, replicated: float = 0.0) -> tuple[float, float]:
    """(bytes on one GPU, bytes in one process's RAM) at the peak of loading under FSDP: see the module's
    docstring. `weights` is the whole model's weights as they are stored for training, `replicated`
    the part of them every GPU keeps whole (QLoRA's quantization states)."""
    if backend == "unsloth":
        return weights, 0.0
    if backend != "peft":
        return 0.0, 0.0  # the plain terms: how another framework loads is not modelled
    layers = max(1, info.num_layers)
    layer_params = max(0, info.params - info.embedding_params) / layers
    if method == "qlora":
        quantized = info.quantizable_params / layers
        layer = quantized * nf4_bytes + max(0.0, layer_params - quantized) * kept
        root = info.embedding_params * kept
    else:
        layer, root = layer_params * word, info.embedding_params * word
    placed = replicated + (0.0 if cpu_offload else (weights - replicated) / world_size)
    return placed + max(layer, root), weights
