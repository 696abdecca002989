"""LoRA target modules: the presets offered for a model, and what a choice costs in parameters.

The names come from the model's real linear modules (engine.planner.architecture builds it on
the meta device); this module only groups them into presets (minimal: query and value, as in the
LoRA paper; recommended: every attention and MLP projection, as QLoRA and Unsloth do; maximum: plus
the embeddings and the output head) and counts LoRA parameters as PEFT does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import UserError

if TYPE_CHECKING:
    from engine.planner.architecture import ModelInfo, ModuleShape

# Fused or separate query/value projections, in the spellings of the common families.
_QUERY_NAMES = ("q_proj", "query", "q", "wq")
_VALUE_NAMES = ("v_proj", "value", "v", "wv")
_FUSED_QKV_NAMES = ("qkv_proj", "c_attn", "query_key_value", "W_pack", "Wqkv", "qkv")


def target_module_presets(modules: dict[str, ModuleShape], linear_modules: list[str]) -> dict[str, list[str]]:
    """minimal / recommended / maximum lists of leaf names for this model."""
    attention = [m.name for m in modules.values() if m.group == "attention" and m.kind == "linear"]
    attention = list(dict.fromkeys(attention))
    query = [n for n in attention if n in _QUERY_NAMES]
    value = [n for n in attention if n in _VALUE_NAMES]
    fused = [n for n in attention if n in _FUSED_QKV_NAMES]
    if query and value:
        minimal = query[:1] + value[:1]
    elif fused:
        minimal = fused[:1]
    else:
        minimal = attention[:2] or linear_modules[:2]
    recommended = list(dict.fromkeys(linear_modules))
    extras = [m.name for m in modules.values() if m.group in ("embedding", "output")]
    maximum = recommended + [n for n in dict.fromkeys(extras) if n not in recommended]
    return {"minimal": minimal, "recommended": recommended, "maximum": maximum}


def resolve_target_modules(info: ModelInfo, target_modules) -> list[str]:
    """Normalise a preset name, "all-linear" or a list of leaf names; unknown names raise UserError."""
    if target_modules is None:
        return list(info.presets["recommended"])
    if isinstance(target_modules, str):
        if target_modules in info.presets:
            return list(info.presets[target_modules])
        if target_modules == "all-linear":
            return list(info.presets["recommended"])
        target_modules = [target_modules]
    names = list(dict.fromkeys(str(name) for name in target_modules))
    if not names:
        raise UserError("lora.target_modules is empty; choose at least one module, e.g. " + ", ".join(info.presets["minimal"]) + ".")
    known = {m.name for m in info.modules.values()}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(
            f"lora.target_modules names {', '.join(unknown)}, which {info.name} does not have; "
            f"its modules are {', '.join(info.presets['maximum'])}."
        )
    return names


def count_trainable_params(info: ModelInfo, target_modules=None, r: int = 16) -> int:
    """LoRA trainable parameters, as PEFT's `get_nb_trainable_parameters` counts them (bias="none")."""
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise UserError(f"lora.r must be a positive whole number, not {r!r}.")
    names = set(resolve_target_modules(info, target_modules))
    return sum(m.lora_params(r) for m in info.modules.values() if m.name in names)
