"""Merge (PEFT merge_and_unload, checked against base + adapter) and the try-it generation process
with the session's template - on a real finished run. GGUF export: tests/test_gguf.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DEMO_MODEL, ROOT, copy_run

PROBE = "### Instruction:\nReturn the sender's contact information as a JSON object.\n\n### Response:\n"


def _logits(model, tokenizer, text=PROBE):
    import torch

    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits.float()


@pytest.mark.training
def test_merge_writes_a_16bit_model_that_answers_like_base_plus_adapter(finished_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.export.merge import merge_adapter

    run_dir = copy_run(finished_run, tmp_path / "run")
    merged = merge_adapter(run_dir)
    assert merged == run_dir / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert not (run_dir / "merged.partial").exists()
    report = json.loads((merged / "lora_tui_merge.json").read_text())
    assert report["dtype"] == "bfloat16" and report["from_4bit"] is False and "16-bit" in report["note"]
    assert report["top1_agreement"] >= 0.9
    config = json.loads((merged / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"

    # Independently of the merge's own check: a plain transformers load of merged/ against base + adapter.
    adapter = run_dir / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(merged)
    reloaded = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    assert not any("lora_" in name for name, _ in reloaded.named_parameters())
    merged_logits = _logits(reloaded, tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base_logits = _logits(base, tokenizer)
    tuned_logits = _logits(PeftModel.from_pretrained(base, str(adapter)), tokenizer)
    adapter_effect = (tuned_logits - base_logits).abs().mean().item()
    merge_error = (merged_logits - tuned_logits).abs().mean().item()
    assert adapter_effect > 0.05, "the fixture's adapter should change the model visibly"
    assert merge_error < 0.25 * adapter_effect, (merge_error, adapter_effect)
    agreement = (merged_logits.argmax(-1) == tuned_logits.argmax(-1)).float().mean().item()
    assert agreement >= 0.9


@pytest.mark.training
def test_save_merged_merges_after_training_in_the_worker(finished_run):
    from tests.conftest import events_of

    end = events_of(finished_run)[-1]
    assert end["event"] == "end" and end["status"] == "completed"
    assert end["adapter_dir"] == str(finished_run / "adapter") and end["merged_dir"] == str(finished_run / "merged")
    assert "16-bit (bf16)" in end["merged_note"] and "merge_error" not in end
    assert any(e["event"] == "status" and e.get("state") == "merging" for e in events_of(finished_run))
    assert (finished_run / "merged" / "config.json").is_file() and (finished_run / "adapter").is_dir()


def test_merge_refuses_a_run_without_an_adapter(tmp_path):
    from engine.errors import UserError
    from engine.export.merge import merge_adapter

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="full fine-tuning run saved the whole model in model/"):
        merge_adapter(tmp_path)
    with pytest.raises(UserError, match="no adapter/adapter_config.json"):
        merge_adapter(tmp_path / "nothing")


# -- try it -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_tokenizer():
    from engine.models import load_tokenizer

    return load_tokenizer(DEMO_MODEL)


def test_prompt_is_rendered_with_the_training_template(demo_tokenizer):
    from engine.data.templates import Renderer, alpaca_prompt
    from engine.evaluation.generate import render_prompt

    bos = Renderer(demo_tokenizer, "instruction", "alpaca").bos
    prompt = "List three primes."
    assert render_prompt(demo_tokenizer, "instruction", "alpaca", prompt) == bos + alpaca_prompt(prompt)
    assert render_prompt(demo_tokenizer, "prompt_completion", "alpaca", prompt) == bos + alpaca_prompt(prompt)
    chat = demo_tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                              add_generation_prompt=True)
    assert render_prompt(demo_tokenizer, "instruction", "chat", prompt) == chat
    assert render_prompt(demo_tokenizer, "messages", "alpaca", prompt) == chat  # conversations: always chat
    assert render_prompt(demo_tokenizer, "text", "alpaca", prompt) == bos + prompt
    # The Alpaca input: its own block in instruction data; after a blank line elsewhere (as in training)
    message = "Hi, I'm Ann Lee at Acme in Oslo: ann@example.com."
    assert render_prompt(demo_tokenizer, "instruction", "alpaca", prompt, message) == bos + alpaca_prompt(prompt, message)
    joined = demo_tokenizer.apply_chat_template([{"role": "user", "content": f"{prompt}\n\n{message}"}], tokenize=False,
                                                add_generation_prompt=True)
    assert render_prompt(demo_tokenizer, "instruction", "chat", prompt, message) == joined
    assert render_prompt(demo_tokenizer, "messages", "alpaca", prompt, message) == joined


@pytest.mark.training
def test_generate_answers_with_base_and_tuned_greedily(finished_run):
    from engine.data.templates import alpaca_prompt

    prompt = "Return the sender's contact information as a JSON object."
    command = [sys.executable, "-m", "engine.evaluation.generate", str(finished_run), "--prompt", prompt, "--max-new-tokens", "24"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    reply = json.loads(first.stdout)  # stdout holds the one JSON object and nothing else
    assert reply["prompt_text"].endswith(alpaca_prompt(prompt))
    assert reply["base"] and reply["tuned"] and reply["base"] != reply["tuned"]
