"""The peft backend: the standard recipe, with no Unsloth anywhere in the process.

transformers' AutoModelForCausalLM (4-bit NF4 with double quantisation through bitsandbytes for
QLoRA) + PEFT's prepare_model_for_kbit_training and get_peft_model + TRL's SFTTrainer. Full
fine-tuning trains the plain model, without PEFT. It runs on a GPU and, slowly, on the CPU.
"""

from __future__ import annotations

NAME = "peft"


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def compute_dtype():
    """The dtype the model computes in: bf16 where the GPU has it, fp16 on older GPUs, fp32 on the CPU
    (engine.training.args turns mixed precision off there)."""
    import torch

    if not _on_gpu():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _gradient_checkpointing(session) -> bool:
    # "unsloth" names Unsloth's offloaded checkpointing; here it is plain gradient checkpointing.
    return bool(session.training.gradient_checkpointing)


def loads_in_ram(session) -> bool:
    """Under FSDP over several processes the model is loaded on the CPU (RAM), not on this rank's GPU:
    each rank would otherwise put the whole model on its GPU before sharding it. `fully_shard`
    (engine.training.fsdp) then moves one unit at a time to the GPU and keeps only this rank's shard
    there (or in RAM, with distributed.cpu_offload). "auto" never means FSDP (engine.training.distributed)."""
    import os

    return session.distributed.strategy == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1


def load(session, model_path: str):
    """The model ready to train (LoRA adapters applied unless full fine-tuning) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = compute_dtype()
    kwargs = dict(trust_remote_code=session.model.trust_remote_code)
    if _on_gpu() and not loads_in_ram(session):
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if session.method == "qlora":
        from transformers import BitsAndBytesConfig

        sharded = loads_in_ram(session)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            # Under FSDP the packed 4-bit weights are sharded like any other parameter: stored in the
            # compute dtype they travel with the rest of a layer's all-gather and survive any cast to
            # that dtype (the FSDP + QLoRA recipe: Answer.AI's fsdp_qlora, PEFT's FSDP-QLoRA guide).
            # bitsandbytes keeps each layer's quantization state on the module and gives it back to
            # the gathered weight in forward; fully_shard's move to the GPU moves that state too.
            bnb_4bit_quant_storage=dtype if sharded else torch.uint8,
        )
        kwargs["dtype"] = dtype
        if sharded:
            # Quantized in RAM: without a device_map transformers puts a 4-bit model on the current GPU.
            kwargs["device_map"] = {"": "cpu"}
    elif session.method == "full" and dtype == torch.float16:
        # fp16 weights cannot be trained with fp16 mixed precision (the scaler refuses fp16 gradients).
        kwargs["dtype"] = torch.float32
    else:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False  # the cache is useless in training and clashes with checkpointing
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=session.model.trust_remote_code)

    if session.method == "full":
        return model, tokenizer

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if session.method == "qlora":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=_gradient_checkpointing(session),
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    # The session's lora block uses LoraConfig's field names, so it maps one to one.
    config = LoraConfig(**session.lora.model_dump(), task_type="CAUSAL_LM")
    # The adapter's random start comes from the session's seed: the same on every rank of a
    # distributed run (FSDP shards what each rank made; DDP would also copy rank 0's).
    from transformers import set_seed

    set_seed(session.training.seed)
    model = get_peft_model(model, config)
    return model, tokenizer


def trainer_overrides(session) -> dict:
    """SFTConfig fields this backend sets: non-reentrant checkpointing, which needs no
    `enable_input_require_grads` trick for the frozen embeddings under LoRA."""
    if _gradient_checkpointing(session):
        return {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    return {"gradient_checkpointing": False}


def trainer_class():
    """TRL's SFTTrainer; on the CPU, one that computes the loss from the model's own logits.

    TRL 1.15 always computes the loss through its fused LM head, whose kernel is written in Triton
    (trl/kernels/chunked_logprob.py) and is used whenever Triton imports - which it does on Linux,
    GPU or not. Without a GPU Triton has no driver and the first step fails with
    "RuntimeError: 0 active drivers ([])"; TRL has no switch for it. On the CPU we therefore fall
    back to transformers' `Trainer.compute_loss`: the same mean token cross-entropy over the labels
    TRL's collator made (prompt tokens masked with -100), from full logits. Only TRL's extra
    metrics (entropy, mean_token_accuracy) are not logged there.
    """
    from trl import SFTTrainer

    if _on_gpu():
        return SFTTrainer
    from transformers import Trainer

    class CpuSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {**inputs, "use_cache": False}
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CpuSFTTrainer


def prepare_for_inference(model):
    model.eval()
    model.config.use_cache = True
    return model
