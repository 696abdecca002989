"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): LoRA + DDP + reentrant
gradient checkpointing, the known trap, on a tiny random Llama (no download).

With `ddp_find_unused_parameters=True` (what transformers asks for on a PEFT model when it is left
unset) the backward pass fails with "... marked as ready twice"; with the arguments
engine.training.args gives a distributed run (it sets False) the same model trains and the ranks'
trainable weights stay identical. Each rank writes what it saw to OUT_DIR/trap-rank-R.json.
"""

import hashlib
import json
import os
import sys

from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, set_seed

from engine.training.args import sft_config_kwargs


def model():
    set_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    peft = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft.enable_input_require_grads()  # reentrant checkpointing needs an input that requires grad
    return peft


def args(out, find_unused):
    from types import SimpleNamespace

    t = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2,
                        num_train_epochs=1, max_steps=2, warmup_ratio=0.0, weight_decay=0.0, lr_scheduler_type="linear",
                        logging_steps=1, eval_steps=None, save_steps=100, save_total_limit=1, optim="adamw_torch",
                        seed=0, gradient_checkpointing=True, max_grad_norm=1.0, report_to="none", trackers=[])
    session = SimpleNamespace(training=t, model=SimpleNamespace(max_seq_length=16))
    kwargs = sft_config_kwargs(session, out, has_eval=False, on_gpu=False, bf16_ok=False, train_rows=16, world_size=2)
    accepted = set(TrainingArguments.__dataclass_fields__)
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    kwargs.update(gradient_checkpointing_kwargs={"use_reentrant": True}, save_strategy="no")
    if find_unused is not None:
        kwargs["ddp_find_unused_parameters"] = find_unused
    return TrainingArguments(**kwargs)


def train(out, find_unused):
    data = Dataset.from_dict({"input_ids": [[1 + (i + j) % 60 for j in range(16)] for i in range(16)]})
    data = data.map(lambda row: {"labels": row["input_ids"]})
    m = model()
    trainer = Trainer(model=m, args=args(out, find_unused), train_dataset=data)
    try:
        trainer.train()
    except RuntimeError as error:
        text = str(error)
        return {"ok": False, "error": text.splitlines()[0][:200], "ready_twice": "marked as ready twice" in text}
    digest = hashlib.sha256()
    for _, p in sorted(m.named_parameters()):
        if p.requires_grad:
            digest.update(p.detach().numpy().tobytes())
    return {"ok": True, "sha256": digest.hexdigest(), "find_unused": trainer.args.ddp_find_unused_parameters,
            "ddp_backend": trainer.args.ddp_backend}


if __name__ == "__main__":
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    seen = {"trap": train(out, True), "ours": train(out, None)}
    with open(os.path.join(out, f"trap-rank-{rank}.json"), "w") as handle:
        json.dump(seen, handle)
