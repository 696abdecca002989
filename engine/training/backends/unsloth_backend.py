"""The Unsloth backend: FastLanguageModel.from_pretrained + get_peft_model.

The worker imports this module before transformers or TRL, so Unsloth's patches apply.
"""

from __future__ import annotations

import unsloth  # noqa: F401  (first: patches transformers and TRL for this process)
from unsloth import FastLanguageModel

NAME = "unsloth"


def load(session, model_path: str):
    """The model ready to train (adapters applied for LoRA / QLoRA) and its tokenizer."""
    full = session.method == "full"
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=session.model.max_seq_length,
        dtype=None,  # Unsloth picks bf16 where the hardware has it, else fp16 (fp32 on CPU)
        load_in_4bit=session.method == "qlora",
        full_finetuning=full,
        trust_remote_code=session.model.trust_remote_code,
    )
    if not full:
        model = FastLanguageModel.get_peft_model(
            model,
            **session.lora.model_dump(),  # the session's lora block uses LoraConfig's field names
            use_gradient_checkpointing=session.training.gradient_checkpointing,
            random_state=session.training.seed,
        )
    return model, tokenizer


def trainer_overrides(session) -> dict:
    """SFTConfig fields this backend sets itself.

    Unsloth applies gradient checkpointing in get_peft_model (its "unsloth" mode offloads
    activations), so the Trainer must not wrap the model a second time.
    """
    overrides = {"gradient_checkpointing": False}
    if session.method == "full":
        overrides["gradient_checkpointing"] = bool(session.training.gradient_checkpointing)
    return overrides


def prepare_for_inference(model):
    FastLanguageModel.for_inference(model)
    return model
