"""FSDP2 on the peft backend: PyTorch's own `fully_shard`, on GPUs and (with gloo) on the CPU.

Why not `fsdp` / `fsdp_config` in TrainingArguments: accelerate builds FSDP only for GPU-like
devices, so on the CPU those settings silently train with DDP (every rank a full copy). Instead
the model is sharded here, before the Trainer sees it: each decoder layer, then the root, over a
one-dimensional device mesh of all ranks. Each rank then holds about 1 / world_size of every
parameter (frozen base weights included), and FSDP2 all-gathers a layer for its forward and
backward and reduce-scatters its gradients.

The Trainer does not know the model is sharded, so `fsdp2_trainer` teaches it what FSDP needs:
accelerate must not wrap the model in DDP, and saving and resuming go through full state dicts
(`torch.distributed.checkpoint.state_dict`): every rank takes part in gathering, rank 0 writes, and
a checkpoint is the usual PEFT adapter (or model) plus optimizer.pt, loadable with or without FSDP.

With the session's `distributed.cpu_offload`, every `fully_shard` gets FSDP2's `CPUOffloadPolicy`:
the shards (and their gradients and the optimizer state) live in RAM, each layer is copied to the GPU
for its forward and backward, and the optimizer steps on the CPU. The shards' collectives then run on
CPU tensors, which NCCL cannot carry (the gradient clipping's norm all-reduce:
https://github.com/pytorch/pytorch/issues/148532), so on GPUs the mesh is a group with gloo for CPU
tensors beside NCCL for CUDA ones. On the CPU (gloo) the policy changes where nothing lives, but
runs the same code path, unpinned (pinning needs a CUDA driver).

The model arrives in RAM (the peft backend loads it on the CPU under FSDP) and `fully_shard` moves
it to the GPU one unit at a time, each already cut to this rank's shard: the whole model never lands
on a GPU (engine.planner.distributed_terms plans that loading).

QLoRA shards the same way: the packed 4-bit weights are parameters stored in the compute dtype
(bnb_4bit_quant_storage, set by the peft backend under FSDP), so each rank holds about 1 / world size
of them and a layer's all-gather brings its 4-bit weights whole. The quantization state (absmax,
the NF4 code) is not a parameter: it stays whole on every rank, on the module, and bitsandbytes'
Linear4bit hands it back to the gathered weight in forward (fix_4bit_weight_quant_state_from_module).
Over gloo on the CPU, 2 processes give the unsharded 4-bit model's logits and adapter gradients bit for
bit (tests/fsdp_qlora_worker.py).

On the unsloth backend Unsloth shards the model itself (UNSLOTH_FSDP2=1, set by the supervisor; its
own switch for the offload is UNSLOTH_FSDP2_CPU_OFFLOAD=1, unsloth/models/fsdp2_native.py).
"""

from __future__ import annotations

import os

from engine.errors import UserError


def _dtensor(param) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)


def is_sharded(model) -> bool:
    return any(_dtensor(p) for p in model.parameters())


def decoder_layers(model) -> list:
    """The repeated blocks to shard one by one: the classes the model names in `_no_split_modules`
    (LlamaDecoderLayer, Qwen2DecoderLayer, ...), found on the base model under PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    return [module for module in model.modules() if type(module).__name__ in names]


def shard_model(model, cpu_offload: bool = False):
    """fully_shard each decoder layer, then the root, over all ranks; with `cpu_offload` the shards
    live in RAM (CPUOffloadPolicy). Returns the same model."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    layers = decoder_layers(model)
    if not layers:
        raise UserError(f"distributed.strategy \"fsdp\": no decoder layers found in {type(model).__name__} to shard; "
                        "use strategy \"ddp\" for this model.")
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        # The peft backend loaded the model into RAM (peft_backend.loads_in_ram): fully_shard moves each
        # unit's parameters to the mesh's device, this rank's GPU, shards them there and frees the whole
        # (with the offload, the shard goes back to RAM), so at most one whole unit is ever on a GPU.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    options = {}
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device_type == "cuda")
    if cpu_offload and device_type == "cuda":
        # Offloaded shards and gradients are CPU tensors: their collectives need gloo beside NCCL.
        mesh = DeviceMesh.from_group(dist.new_group(backend="cpu:gloo,cuda:nccl"), device_type)
    else:
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        # TRL's SFTTrainer casts a quantized model's adapters to bf16 in its constructor (the QLoRA paper's
        # choice). Here the model is sharded before the trainer exists, and that cast after fully_shard
        # would change each local shard under a DTensor that still says fp32: so it happens first.
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_magnitude_vector" not in name:
                param.data = param.data.to(torch.bfloat16)
    if device_type == "cuda":
        _quant_states_to(model, torch.device("cuda", torch.cuda.current_device()))
    for layer in layers:
        fully_shard(layer, mesh=mesh, **options)
    fully_shard(model, mesh=mesh, **options)
    return model


def _quant_states_to(model, device) -> None:
    """4-bit layers' quantization states to this rank's GPU: they are not parameters, so fully_shard
    does not place them (bitsandbytes' Params4bit.to moves them as a side effect; this says so)."""
    for module in model.modules():
        state = getattr(module, "quant_state", None)
        if state is not None and hasattr(state, "to"):
            state.to(device)  # QuantState.to moves its tensors in place


def parameters_offloaded(model) -> bool:
    """Whether this rank's shards live in RAM: some fully_shard unit has FSDP2's CPUOffloadPolicy."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    for module in model.modules():
        state = module._get_fsdp_state() if hasattr(module, "_get_fsdp_state") else None
        groups = getattr(state, "_fsdp_param_groups", None) or [getattr(state, "_fsdp_param_group", None)]
        if any(isinstance(getattr(group, "offload_policy", None), CPUOffloadPolicy) for group in groups):
            return True
    return False


def parameters_held(model) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model): a sharded parameter counts its local shard."""
    held = total = 0
    for param in model.parameters():
        total += param.numel()
        held += param.to_local().numel() if _dtensor(param) else param.numel()
    return held, total


def full_trainable_state(model) -> dict:
    """Every trainable parameter in full, on the CPU: a collective (each rank gathers each sharded
    parameter in the same order); every rank gets the dict, rank 0 writes it."""
    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            value = param.full_tensor() if _dtensor(param) else param
            state[name] = value.detach().cpu()
    return state


def adapter_name(model) -> str | None:
    return getattr(model, "active_adapter", None) if hasattr(model, "peft_config") else None


def fsdp2_trainer(base):
    """`base` (TRL's SFTTrainer or the peft backend's CPU variant) for a model sharded by `shard_model`."""
    import torch
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

    full = StateDictOptions(full_state_dict=True, cpu_offload=True)

    class FSDP2Trainer(base):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            prepare_model = self.accelerator.prepare_model

            def keep_sharded(model, device_placement=None, evaluation_mode=False):
                # accelerate would wrap the model in DDP (and refuses DTensor parameters): FSDP2 already
                # synchronises gradients by reduce-scattering them.
                if is_sharded(model):
                    if model not in self.accelerator._models:
                        self.accelerator._models.append(model)
                    return model
                return prepare_model(model, device_placement=device_placement, evaluation_mode=evaluation_mode)

            self.accelerator.prepare_model = keep_sharded

        def _move_model_to_device(self, model, device):
            pass  # each shard is where fully_shard put it

        # -- saving: gather on every rank, write on rank 0 -------------------------------------------
        def save_model(self, output_dir=None, _internal_call=False):
            output_dir = output_dir or self.args.output_dir
            state = full_trainable_state(self.model)
            if self.args.should_save:
                self._save(output_dir, state_dict=state)

        def _save_optimizer_and_scheduler(self, output_dir):
            state = get_optimizer_state_dict(self.model, self.optimizer.optimizer, options=full)
            if self.args.should_save:
                os.makedirs(output_dir, exist_ok=True)
                torch.save(state, os.path.join(output_dir, OPTIMIZER_NAME))
                torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

        # -- resuming: every rank reads the full state and keeps its shard -----------------------------
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            state = _read_weights(resume_from_checkpoint)
            adapter = adapter_name(self.model)
            names = {}
            for name, param in self.model.named_parameters():
                if param.requires_grad:
                    names[name.replace(f".{adapter}.", ".") if adapter else name] = name
            missing = sorted(set(names) - set(state))
            if missing:
                raise UserError(f"{resume_from_checkpoint}: the checkpoint lacks {len(missing)} trained weights "
                                f"(such as {missing[0]}); it was not written by this run's model.")
            set_model_state_dict(self.model, {names[key]: state[key] for key in names},
                                 options=StateDictOptions(full_state_dict=True, strict=False))

        def _load_optimizer_and_scheduler(self, checkpoint):
            if checkpoint is None:
                return
            path = os.path.join(checkpoint, OPTIMIZER_NAME)
            if not os.path.isfile(path):
                return
            state = torch.load(path, map_location="cpu", weights_only=True)
            set_optimizer_state_dict(self.model, self.optimizer.optimizer, state,
                                     options=StateDictOptions(full_state_dict=True))
            self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_NAME), weights_only=True))

    FSDP2Trainer.__name__ = f"FSDP2{base.__name__}"
    return FSDP2Trainer


def _read_weights(folder) -> dict:
    """The weights of a checkpoint folder as one dict: a PEFT adapter, or a (sharded) safetensors model."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)
    for single in ("adapter_model.safetensors", "model.safetensors"):
        if (folder / single).is_file():
            return load_file(str(folder / single))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
        return state
    raise UserError(f"{folder}: no adapter_model.safetensors or model.safetensors to resume from.")
