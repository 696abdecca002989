"""Tokens/s and tokens_seen count what was trained: the training batches of each optimizer step
(all its gradient-accumulation micro-batches), not the batch the dataloader has already built for
the next step, and not the evaluation batches that pass through the same collator attribute; and
tokens/s is over the steps' own time, not the evaluations between them.

A real TRL SFTTrainer (the peft backend's, which runs on the CPU) in a fresh process, on a tiny randomly initialised Llama (only the counting
is under test), with rows that all have the same length so the exact count is known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVALUATION_SECONDS = 5.0  # each evaluation in the check sleeps this long: time that is not training

CHECK = r'''
import json, sys, time
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
from trl import SFTConfig
from engine.training.backends.peft_backend import trainer_class  # TRL's SFTTrainer; its CPU loss without Triton
from engine.data import prepare_dataset
from engine.runs.events import EventWriter, read_events
from engine.models import load_tokenizer
from engine.training.callback import ProgressCallback, count_training_tokens
from engine.session.schema import DatasetSection
from engine.training.worker import StopFlag

data_path, run_dir = sys.argv[1], Path(sys.argv[2])
tok = load_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")
data = prepare_dataset(DatasetSection(path=data_path, eval_fraction=0.25), tok, 256)
length = len(data.train[0]["input_ids"])
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1))
args = SFTConfig(output_dir=str(run_dir), max_length=256, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                 max_steps=3, logging_steps=1, eval_strategy="steps", eval_steps=1, save_strategy="no",
                 completion_only_loss=True, report_to=[], use_cpu=True, bf16=False, dataloader_num_workers=0)
trainer = trainer_class()(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tok)
counter = count_training_tokens(trainer)

EVALUATION_SECONDS = float(sys.argv[3])

class SlowEvaluation(TrainerCallback):  # an evaluation that takes seconds: not training time
    def on_evaluate(self, args, state, control, **kwargs):
        time.sleep(EVALUATION_SECONDS)

trainer.add_callback(SlowEvaluation())
trainer.add_callback(ProgressCallback(EventWriter(run_dir), StopFlag(run_dir), counter))
trainer.train()
logs = [e for e in read_events(run_dir) if e["event"] == "log"]
print("RESULT " + json.dumps({"length": length, "tokens": counter.tokens, "samples": counter.samples,
                              "eval_rows": len(data.eval), "tokens_seen": [e["tokens_seen"] for e in logs],
                              "tokens_per_second": [e["tokens_per_second"] for e in logs]}))
'''


def test_tokens_seen_counts_the_trained_batches_only(tmp_path):
    rows = [{"instruction": "Say the code.", "output": "abcdefgh"}] * 40  # one length: no padding
    data = tmp_path / "same.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CHECK, str(data), str(tmp_path / "run"), str(EVALUATION_SECONDS)],
                          capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    per_step = 2 * 2 * result["length"]  # batch 2 x 2 micro-batches, every row the same length
    assert result["eval_rows"] > 0  # evaluated after every step, through the same collator attribute
    assert result["samples"] == 3 * 2 * 2
    assert result["tokens"] == 3 * per_step
    assert result["tokens_seen"] == [per_step, 2 * per_step, 3 * per_step]
    # Steps 2 and 3 each follow a 5-second evaluation. Counted as training it would put the rate under
    # per_step / 5 s; a step of this tiny model takes milliseconds (about a second on a 2-core machine
    # running three trainings besides), so its own rate is well above that.
    assert all(rate > per_step / EVALUATION_SECONDS for rate in result["tokens_per_second"][1:]), result["tokens_per_second"]
