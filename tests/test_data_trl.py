"""The prepared splits go into TRL's SFTTrainer (plain, and as Unsloth patches it) and the loss mask
survives: the trainer's `labels` are -100 exactly where our `completion_mask` is 0.

The Unsloth check runs in a fresh process: importing Unsloth patches TRL for the whole process. The
plain TRL check runs in the test process, which never imports Unsloth (backends are imported only in
the worker process, engine/training/backends); it checks that first. Nearly all of a fresh process's
time is importing torch, transformers and TRL, which the test process has done already. The model is
a real (tiny, randomly initialised) Llama; only the trainer's data preparation is under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def check_labels(path: str, out_dir: str) -> dict:
    """Build SFTTrainer on the prepared splits of `path` (with and without completion_only_loss) and
    compare its labels with our completion_mask. Imports inside: under Unsloth it must come first."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from engine.data import prepare_dataset
    from engine.models import load_tokenizer
    from engine.session.schema import DatasetSection

    tok = load_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")
    data = prepare_dataset(DatasetSection(path=path, eval_fraction=0.25), tok, 512)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))

    def trainer(**extra):
        args = SFTConfig(output_dir=out_dir, max_length=512, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                         bf16=False, save_strategy="no", **extra)
        return SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tok)

    def expected(split):
        return sorted([[t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])] for r in split])

    masked = trainer(completion_only_loss=True)
    unset = trainer()
    rows = range(min(2, len(masked.train_dataset)))
    batch = masked.data_collator([masked.train_dataset[i] for i in rows])
    return {
        "train": sorted(masked.train_dataset["labels"]) == expected(data.train),
        "eval": sorted(masked.eval_dataset["labels"]) == expected(data.eval),
        "collator": all(batch["labels"][i][: len(masked.train_dataset[i]["labels"])].tolist() == masked.train_dataset[i]["labels"]
                        for i in rows),
        "unset_trains_everything": all(-100 not in labels for labels in unset.train_dataset["labels"]),
    }


UNSLOTH_CHECK = r'''
import json, sys
import unsloth  # noqa: F401  (patches TRL; must come first)
from tests.test_data_trl import check_labels
print("RESULT " + json.dumps(check_labels(*sys.argv[1:3])))
'''


def unsloth_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in ("unsloth", "unsloth_zoo"))


def run_check(backend: str, dataset: str, tmp_path: Path) -> dict:
    if backend == "trl":  # plain TRL: here, as long as nothing in this process has imported Unsloth
        assert unsloth_modules() == [], "Unsloth was imported in the test process; TRL is patched here"
        return check_labels(str(DATA / dataset), str(tmp_path / "out"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), UNSLOTH_COMPILE_LOCATION=str(tmp_path / "unsloth_cache"))
    done = subprocess.run([sys.executable, "-c", UNSLOTH_CHECK, str(DATA / dataset), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("backend, dataset", [("trl", "alpaca.jsonl"), ("unsloth", "sharegpt_system.json")])
def test_sft_trainer_builds_labels_from_completion_mask(backend, dataset, tmp_path):
    result = run_check(backend, dataset, tmp_path)
    assert result["train"] and result["eval"], result
    assert result["collator"], result
    # Why SFTConfig(completion_only_loss=True) is required: left unset, TRL decides from the column
    # names (prompt + completion) and a pre-tokenized dataset gets no mask at all.
    assert result["unset_trains_everything"], result
