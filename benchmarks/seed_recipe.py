"""The seed recipe as a bare script: the baseline that `lora-tui --replay` is measured against.

    .venv/bin/python benchmarks/seed_recipe.py SESSION.json RESULT.json

Unsloth's FastLanguageModel + get_peft_model + TRL's SFTTrainer, nothing else: no events, no
stop/pause checks, no diagnostics, no checkpoints. It reads the settings from the same session
file the wrapper runs (as plain JSON), resolves the same model through `engine.models`, and
tokenizes the same rows through `engine.data.prepare_dataset`, so both train on identical batches.
It writes, per logging step, the wall time and TRL's own running count of non-padding tokens
(`num_tokens`), plus its peak RSS and torch's peak allocated GPU memory.
"""

import json
import resource
import sys
import time
from pathlib import Path

import torch
import unsloth  # noqa: F401  (first, as the recipe says: it patches transformers and TRL)
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer
from unsloth import FastLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data import prepare_dataset
from engine.models import resolve_model
from engine.session.schema import DatasetSection


class StepClock(TrainerCallback):
    """Wall time and TRL's token count at each log, the same points lora-tui's events mark."""

    def __init__(self):
        self.points = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and "num_tokens" in logs:
            self.points.append((state.global_step, time.time(), int(logs["num_tokens"])))


def main(session_path: str, result_path: str) -> int:
    s = json.loads(Path(session_path).read_text())
    model_cfg, lora, t = s["model"], s["lora"], s["training"]
    out_dir = Path(result_path).with_suffix(".out")

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=resolve_model(model_cfg["name"]).path,
        max_seq_length=model_cfg["max_seq_length"],
        dtype=None,
        load_in_4bit=s["method"] == "qlora",
    )
    model = FastLanguageModel.get_peft_model(
        model, r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"], bias=lora["bias"],
        target_modules=lora["target_modules"], use_gradient_checkpointing=t["gradient_checkpointing"],
        random_state=t["seed"],
    )
    data = prepare_dataset(DatasetSection(**s["dataset"]), tokenizer, model_cfg["max_seq_length"], seed=t["seed"])

    gpu = torch.cuda.is_available()
    bf16 = gpu and torch.cuda.is_bf16_supported()
    clock = StepClock()
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=data.train,
        callbacks=[clock],
        args=SFTConfig(
            output_dir=str(out_dir),
            per_device_train_batch_size=t["per_device_train_batch_size"],
            gradient_accumulation_steps=t["gradient_accumulation_steps"],
            learning_rate=t["learning_rate"],
            max_steps=t["max_steps"],
            warmup_steps=t["warmup_ratio"],
            weight_decay=t["weight_decay"],
            lr_scheduler_type=t["lr_scheduler_type"],
            logging_steps=t["logging_steps"],
            max_grad_norm=t["max_grad_norm"],
            optim=t["optim"] if gpu else "adamw_torch",  # 8-bit AdamW needs CUDA
            seed=t["seed"],
            gradient_checkpointing=False,  # Unsloth's own checkpointing, set in get_peft_model
            bf16=bf16, fp16=gpu and not bf16, use_cpu=not gpu,
            max_length=model_cfg["max_seq_length"],
            completion_only_loss=True,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0,
        ),
    )
    trainer.train()
    result = {
        "points": clock.points,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gpu_peak_allocated_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
