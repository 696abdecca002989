"""What a model is made of, read from its config alone: no weights are loaded.

The model is built on the meta device from its `config.json`, so the parameter count is exact and
the LoRA target modules are the real `nn.Linear` names of this architecture (Phi-3 has `qkv_proj`
and `gate_up_proj`), not a table's guess. Inspections are cached: the wizard asks repeatedly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from engine.errors import ModelError
from engine.models import model_config
from engine.planner.target_modules import target_module_presets

_ATTENTION_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "feed_forward", "ffn", "experts")
# Towers of multimodal models: LoRA for text fine-tuning stays in the language model.
_NON_TEXT_HINTS = ("vision", "visual", "image", "audio", "multi_modal_projector", "mm_projector")


@dataclass(frozen=True)
class ModuleShape:
    """One kind of LoRA-targetable module: its leaf name, shape and how often it occurs."""

    name: str
    kind: str  # "linear" (nn.Linear / GPT-2 Conv1D) or "embedding"
    in_features: int  # for an embedding: num_embeddings
    out_features: int  # for an embedding: embedding_dim
    count: int
    group: str  # "attention", "mlp", "embedding", "output" or "other"

    @property
    def params(self) -> int:
        return self.in_features * self.out_features * self.count

    def lora_params(self, r: int) -> int:
        # PEFT: lora_A is (r x in), lora_B is (out x r); for embeddings A is (r x num), B is (dim x r).
        return r * (self.in_features + self.out_features) * self.count


@dataclass
class ModelInfo:
    """The facts about a model that the planner and the wizard need. Treat it as read-only."""

    name: str
    architecture: str
    model_type: str
    params: int
    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    context_length: int | None
    tie_word_embeddings: bool
    linear_modules: list[str]
    presets: dict[str, list[str]]
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    modules: dict[str, ModuleShape] = field(default_factory=dict)
    # Parameters bitsandbytes would store in 4 bit for QLoRA: every nn.Linear but the output head.
    quantizable_params: int = 0
    # Parameters of the input embedding and the (untied) output head: big for 128k-256k vocabularies.
    embedding_params: int = 0
    torch_dtype: str | None = None
    source: str = ""
    # Mixture of experts: experts per layer and experts each token runs through (0 and 1 when dense).
    num_experts: int = 0
    experts_per_token: int = 1



def inspect_model(model: str, trust_remote_code: bool = False) -> ModelInfo:
    """Inspect a hub id, a model folder or a `config.json` path. Bad input raises `ModelError`."""
    if not isinstance(model, str) or not model.strip():
        raise ModelError("The model name is empty; give a hub id, a model folder or a config.json path.")
    return _inspect_cached(model.strip(), bool(trust_remote_code))


@lru_cache(maxsize=32)
def _inspect_cached(model: str, trust_remote_code: bool) -> ModelInfo:
    found = model_config(model)  # engine.models: the one resolver of model names
    return inspect_config(found.data, name=model, source=found.source, folder=found.folder, trust_remote_code=trust_remote_code)


def inspect_config(
    config_dict: dict,
    *,
    name: str = "model",
    source: str = "",
    folder: Path | None = None,
    trust_remote_code: bool = False,
) -> ModelInfo:
    """Build the model described by `config_dict` on the meta device and read its facts."""
    architectures = config_dict.get("architectures")
    if not architectures or not isinstance(architectures, list) or not isinstance(architectures[0], str):
        raise ModelError(
            f"The config of {name} has no `architectures` field; it must name the model class, "
            'e.g. "architectures": ["LlamaForCausalLM"].'
        )
    architecture = architectures[0]
    model_type = config_dict.get("model_type")
    if not model_type:
        raise ModelError(f'The config of {name} has no `model_type` field (e.g. "model_type": "llama").')
    config = _make_config(config_dict, name, folder, trust_remote_code)
    model = _build_on_meta(config, architecture, name, trust_remote_code)
    return _describe(model, config, name=name, architecture=architecture, model_type=str(model_type), source=source)


def _make_config(config_dict: dict, name: str, folder: Path | None, trust_remote_code: bool):
    from transformers import CONFIG_MAPPING, AutoConfig

    model_type = config_dict["model_type"]
    try:
        if model_type in CONFIG_MAPPING:
            return CONFIG_MAPPING[model_type].from_dict(dict(config_dict))
        if trust_remote_code and folder is not None:
            return AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    except Exception as error:
        raise ModelError(f"The config of {name} does not load: {_first_line(error)}.") from error
    hint = " with --trust-remote-code from its model folder" if not trust_remote_code else ""
    raise ModelError(
        f'The config of {name} has model_type "{model_type}", which this transformers does not know; '
        f"upgrade transformers or load it{hint}."
    )


def _build_on_meta(config, architecture: str, name: str, trust_remote_code: bool):
    import torch
    import transformers

    model_class = getattr(transformers, architecture, None)
    try:
        with torch.device("meta"):
            if model_class is not None:
                return model_class(config)
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as error:
        raise ModelError(
            f"{name} names the class {architecture}, which this transformers cannot build as a causal language model "
            f"({_first_line(error)})."
        ) from error
    except Exception as error:
        raise ModelError(f"Cannot build {name} ({architecture}) from its config: {_first_line(error)}.") from error


def _describe(model, config, *, name: str, architecture: str, model_type: str, source: str) -> ModelInfo:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = sum(p.numel() for p in model.parameters())  # parameters() skips tied duplicates
    input_embeddings = model.get_input_embeddings()
    try:
        output_embeddings = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        output_embeddings = None

    modules = _collect_modules(model, input_embeddings, output_embeddings, getattr(text, "num_local_experts", None))
    linear_modules = list(
        dict.fromkeys(m.name for m in modules.values() if m.kind == "linear" and m.group in ("attention", "mlp", "other"))
    )
    presets = target_module_presets(modules, linear_modules)

    quantizable = 0
    for module in model.modules():
        if _is_linear(module) and module is not output_embeddings:
            quantizable += sum(p.numel() for p in module.parameters(recurse=False))
    embedding_params = input_embeddings.weight.numel() if input_embeddings is not None else 0
    tied = bool(
        output_embeddings is not None
        and input_embeddings is not None
        and output_embeddings.weight is input_embeddings.weight
    )
    if output_embeddings is not None and not tied:
        embedding_params += output_embeddings.weight.numel()

    hidden = int(_attr(text, "hidden_size", "n_embd", "d_model", default=0))
    heads = int(_attr(text, "num_attention_heads", "n_head", default=1) or 1)
    kv_heads = int(_attr(text, "num_key_value_heads", "num_kv_heads", default=heads) or heads)
    head_dim = int(_attr(text, "head_dim", default=0) or (hidden // heads if heads else 0))
    intermediate = _attr(text, "moe_intermediate_size", "intermediate_size", "n_inner", "ffn_dim", default=None) or 4 * hidden
    num_experts = int(_attr(text, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0)
    experts_per_token = int(_attr(text, "num_experts_per_tok", "moe_topk", default=1) or 1) if num_experts else 1
    dtype = getattr(config, "dtype", None)
    return ModelInfo(
        name=name,
        architecture=architecture,
        model_type=model_type,
        params=int(params),
        num_layers=int(_attr(text, "num_hidden_layers", "n_layer", "num_layers", default=0)),
        hidden_size=hidden,
        intermediate_size=int(intermediate),
        vocab_size=int(_attr(text, "vocab_size", default=0)),
        context_length=_attr(text, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", default=None),
        tie_word_embeddings=tied,
        linear_modules=linear_modules,
        presets=presets,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        modules=modules,
        quantizable_params=int(quantizable),
        embedding_params=int(embedding_params),
        torch_dtype=str(dtype).replace("torch.", "") if dtype is not None else None,
        source=source,
        num_experts=num_experts,
        experts_per_token=experts_per_token,
    )


def _attr(config, *names, default=None):
    for attribute in names:
        value = getattr(config, attribute, None)
        if value is not None:
            return value
    return default


def _is_linear(module) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def _linear_shape(module) -> tuple[int, int]:
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    rows, cols = module.weight.shape  # GPT-2 Conv1D stores (in, out)
    return int(rows), int(cols)


def _collect_modules(model, input_embeddings, output_embeddings, num_experts) -> dict[str, ModuleShape]:
    """Every LoRA-targetable leaf, grouped by leaf name in the order the model defines them."""
    import torch

    found: dict[tuple[str, tuple[int, int]], dict] = {}
    for path, module in model.named_modules():
        if not path:
            continue
        leaf = path.rsplit(".", 1)[-1]
        if any(hint in part for part in path.lower().split(".") for hint in _NON_TEXT_HINTS):
            continue
        if module is output_embeddings:
            kind, group = "linear", "output"
            shape = _linear_shape(module)
        elif isinstance(module, torch.nn.Embedding):
            if module is not input_embeddings:
                continue  # position embeddings and the like are not LoRA targets worth offering
            kind, group = "embedding", "embedding"
            shape = (module.num_embeddings, module.embedding_dim)
        elif _is_linear(module):
            kind = "linear"
            shape = _linear_shape(module)
            group = _group_of(path)
            if num_experts and shape[1] == num_experts:
                group = "router"  # a mixture-of-experts router: training it with LoRA destabilises routing
        else:
            continue
        entry = found.setdefault((leaf, shape), {"kind": kind, "group": group, "count": 0})
        entry["count"] += 1

    # One leaf name may carry several shapes (GPT-2's c_proj in attention and in the MLP): keep each.
    modules: dict[str, ModuleShape] = {}
    seen: dict[str, int] = {}
    for (leaf, shape), entry in found.items():
        index = seen.get(leaf, 0)
        seen[leaf] = index + 1
        key = leaf if index == 0 else f"{leaf}#{index}"
        modules[key] = ModuleShape(leaf, entry["kind"], shape[0], shape[1], entry["count"], entry["group"])
    return modules


def _group_of(path: str) -> str:
    parts = path.lower().split(".")[:-1]
    if any(hint in part for part in parts for hint in _ATTENTION_HINTS):
        return "attention"
    if any(hint in part for part in parts for hint in _MLP_HINTS):
        return "mlp"
    return "other"


def clear_cache() -> None:
    _inspect_cached.cache_clear()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else error.__class__.__name__).rstrip(".")
