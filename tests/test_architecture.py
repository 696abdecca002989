"""Architecture read from real configs on the meta device: exact counts, real module names, PEFT's count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.errors import ModelError, UserError
from engine.planner.architecture import inspect_config, inspect_model
from engine.planner.target_modules import count_trainable_params, resolve_target_modules

CONFIGS = Path(__file__).resolve().parent / "configs"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Total parameters as published on the model cards (safetensors metadata), for the configs in tests/configs.
EXPECTED = {
    "llama-3.1-8b": ("LlamaForCausalLM", 8_030_261_248, 32, 128_256, False),
    "llama-3.2-1b": ("LlamaForCausalLM", 1_235_814_400, 16, 128_256, True),
    "llama-3.2-3b": ("LlamaForCausalLM", 3_212_749_824, 28, 128_256, True),
    "mistral-7b-v0.3": ("MistralForCausalLM", 7_248_023_552, 32, 32_768, False),
    "qwen2.5-7b": ("Qwen2ForCausalLM", 7_615_616_512, 28, 152_064, False),
    "qwen2.5-0.5b": ("Qwen2ForCausalLM", 494_032_768, 24, 151_936, True),
    "phi-3-mini-4k": ("Phi3ForCausalLM", 3_821_079_552, 32, 32_064, False),
    "gemma-2-9b": ("Gemma2ForCausalLM", 9_241_705_984, 42, 256_000, True),
    "llama-3.1-70b": ("LlamaForCausalLM", 70_553_706_496, 80, 128_256, False),
    "smollm2-135m": ("LlamaForCausalLM", 134_515_008, 30, 49_152, True),
    "gpt2": ("GPT2LMHeadModel", 124_439_808, 12, 50_257, True),
    "llama-2-7b": ("LlamaForCausalLM", 6_738_415_616, 32, 32_000, False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_configs_count_exactly(name):
    architecture, params, layers, vocab, tied = EXPECTED[name]
    info = inspect_model(str(CONFIGS / name))
    assert info.architecture == architecture
    assert info.params == params
    assert info.num_layers == layers
    assert info.vocab_size == vocab
    assert info.tie_word_embeddings is tied


def test_llama_8b_recommended_r16_is_the_seed_figure():
    info = inspect_model(str(CONFIGS / "llama-3.1-8b" / "config.json"))
    assert info.linear_modules == ALL_LINEAR
    assert info.presets["recommended"] == ALL_LINEAR
    assert info.presets["minimal"] == ["q_proj", "v_proj"]
    assert info.presets["maximum"] == ALL_LINEAR + ["embed_tokens", "lm_head"]
    assert count_trainable_params(info, info.presets["recommended"], 16) == 41_943_040
    assert info.context_length == 131_072 and info.hidden_size == 4096 and info.intermediate_size == 14336


def test_smollm2_seven_projections_r16():
    info = inspect_model(str(CONFIGS / "smollm2-135m"))
    assert count_trainable_params(info, ALL_LINEAR, 16) == 4_884_480
    assert info.params + 4_884_480 == 139_399_488  # what PEFT reports for the demo model with LoRA on


def test_phi3_has_fused_projections_found_from_the_model():
    info = inspect_model(str(CONFIGS / "phi-3-mini-4k"))
    assert set(info.linear_modules) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    assert info.presets["minimal"] == ["qkv_proj"]
    assert "q_proj" not in info.linear_modules


def test_gpt2_conv1d_modules_and_shared_leaf_name():
    info = inspect_model(str(CONFIGS / "gpt2"))
    assert info.linear_modules == ["c_attn", "c_proj", "c_fc"]
    assert info.presets["maximum"][-2:] == ["wte", "lm_head"]
    # c_proj is 768x768 in attention and 3072x768 in the MLP: both are counted.
    assert count_trainable_params(info, ["c_proj"], 8) == 12 * 8 * (768 + 768) + 12 * 8 * (3072 + 768)


def test_qlora_split_keeps_embeddings_and_head_out_of_4bit():
    info = inspect_model(str(CONFIGS / "llama-3.1-8b"))
    assert info.embedding_params == 2 * 128_256 * 4096  # embed_tokens + untied lm_head
    assert info.quantizable_params + info.embedding_params + 65 * 4096 == info.params  # + 65 RMSNorm weights
    tied = inspect_model(str(CONFIGS / "llama-3.2-1b"))
    assert tied.embedding_params == 128_256 * 2048  # one matrix when tied


def _peft_count(name: str, modules: list[str], r: int) -> int:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import CONFIG_MAPPING

    data = json.loads((CONFIGS / name / "config.json").read_text())
    config = CONFIG_MAPPING[data["model_type"]].from_dict(data)
    with torch.device("meta"):
        model = getattr(transformers, data["architectures"][0])(config)
    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=modules))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    return trainable


@pytest.mark.parametrize(
    "name, preset, r",
    [
        ("smollm2-135m", "recommended", 16),
        ("smollm2-135m", "maximum", 8),  # LoRA on the tied embedding and lm_head too
        ("phi-3-mini-4k", "recommended", 16),
        ("gpt2", "maximum", 4),
        ("qwen2.5-0.5b", "minimal", 64),
    ],
)
def test_count_matches_real_peft_on_meta_model(name, preset, r):
    info = inspect_model(str(CONFIGS / name))
    modules = info.presets[preset]
    assert count_trainable_params(info, modules, r) == _peft_count(name, modules, r)


def test_seventy_b_builds_on_meta_in_seconds():
    from engine.planner.architecture import clear_cache

    clear_cache()
    started = time.monotonic()
    info = inspect_model(str(CONFIGS / "llama-3.1-70b"))
    assert time.monotonic() - started < 20
    assert count_trainable_params(info, None, 16) == 207_093_760


def test_inspection_is_cached():
    first = inspect_model(str(CONFIGS / "qwen2.5-7b"))
    assert inspect_model(str(CONFIGS / "qwen2.5-7b")) is first


def test_unknown_target_module_names_the_real_ones():
    info = inspect_model(str(CONFIGS / "phi-3-mini-4k"))
    with pytest.raises(UserError, match="q_proj.*qkv_proj"):
        count_trainable_params(info, ["q_proj"], 16)
    assert resolve_target_modules(info, "all-linear") == info.presets["recommended"]
    with pytest.raises(UserError, match="lora.r"):
        count_trainable_params(info, None, 0)


def test_missing_folder_is_one_sentence(tmp_path):
    with pytest.raises(ModelError, match="No such model file or folder"):
        inspect_model(str(tmp_path / "nothing"))
    with pytest.raises(ModelError, match="has no config.json"):
        inspect_model(str(tmp_path))


def test_config_without_architectures(tmp_path):
    data = json.loads((CONFIGS / "smollm2-135m" / "config.json").read_text())
    del data["architectures"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="no `architectures` field"):
        inspect_model(str(path))


def test_config_not_json_and_unknown_model_type(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        inspect_model(str(path))
    with pytest.raises(ModelError, match='model_type "no-such-family"'):
        inspect_config({"architectures": ["NoSuchForCausalLM"], "model_type": "no-such-family"}, name="x")


def test_hub_id_not_cached_and_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot be reached|not in the local"):
        inspect_model("nobody-here/no-such-model-xyz")


def test_mixture_of_experts_counts_and_leaves_the_router_alone():
    info = inspect_model(str(CONFIGS / "mixtral-8x7b"))
    assert info.params == 46_702_792_704
    assert info.num_experts == 8 and info.experts_per_token == 2
    assert "gate" not in info.presets["recommended"]  # the router: LoRA there destabilises routing
    assert info.presets["recommended"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert count_trainable_params(info, None, 16) == _peft_count("mixtral-8x7b", info.presets["recommended"], 16)


def test_demo_hub_id_resolves_without_a_hub(demo_model_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = inspect_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert info.architecture == "LlamaForCausalLM" and info.params == 134_515_008
    assert count_trainable_params(info, None, 16) == 4_884_480
    folder = inspect_model(demo_model_path)  # the resolved folder itself
    assert folder.params == info.params and folder.linear_modules == info.linear_modules
