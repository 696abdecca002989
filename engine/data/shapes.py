"""What kind of data a file holds, beyond its column layout: trained, or refused by name.

lora-tui trains supervised fine-tuning: prompts and the answers to learn. Files written for other
kinds of training look much like that and would train as the wrong thing, so each is recognised
from its columns and first rows and named in one sentence with the honest alternative:

- preference pairs (`chosen` / `rejected`, with a shared prompt or with the prompt inside each
  answer: TRL's explicit and implicit prompt forms, LLaMA-Factory's `ranking: true`, Axolotl's DPO
  types). Trained only when the person maps `chosen` as the answer (dataset.columns): SFT on the
  preferred answers, an explicit choice the report repeats.
- KTO / unpaired preference (a boolean `label` per answer, some false): refused; a file holding
  only the desirable rows (every label true) is plain supervised data.
- multimodal rows (image / audio / video columns, `<image>` placeholders, image parts in turns):
  refused for text models.
- pre-tokenized rows (`input_ids` with no text beside them): refused; with text beside them the ids
  are ignored and the text tokenized with the model's own tokenizer.
- prompt-only rows (a `prompt` and no answer, as for GRPO): refused.
- tool-calling conversations (ShareGPT `function_call` / `observation`, OpenAI `tool_calls` / role
  `tool`, a `tools` column): trained through the model's chat template and its tools support.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

from engine.data.detect import conversation_shape, detect_format, parse_json_list
from engine.data.load import RawTable
from engine.errors import DataError

SAMPLE = 50  # rows looked at to name a shape
MEDIA_COLUMNS = {"image", "images", "img", "image_path", "image_url", "pixel_values", "audio", "audios",
                 "audio_path", "video", "videos", "video_path"}
MEDIA_PLACEHOLDER = re.compile(r"<(image|audio|video)>")
MEDIA_PART_TYPES = {"image", "image_url", "input_image", "audio", "input_audio", "video", "video_url"}
PROMPT_COLUMNS = ("prompt", "instruction", "question", "query", "input", "conversations", "messages", "conversation")
# KTO's label: TRL's name, and LLaMA-Factory's `kto_tag` role under the names its files use.
LABEL_COLUMNS = ("label", "kto_tag", "kto_label", "desirable", "is_desirable")
SHAREGPT_TOOL_SPEAKERS = {"function_call", "observation", "tool_call", "tool", "tool_response", "function_response"}
TOOLS_COLUMNS = ("tools", "functions")


@dataclass
class Shape:
    kind: str  # supervised | tool_calling | preference | kto | multimodal | pretokenized | prompt_only
    description: str  # what the report says the file is
    refusal: str = ""  # the one sentence when it cannot be trained as it is (without the path)
    columns: tuple[str, ...] = ()  # preference: (chosen, rejected); prompt-only: (prompt,)


# -- looking at values -------------------------------------------------------------------------
def _column(table: RawTable, names: tuple[str, ...]) -> Optional[str]:
    by_lower = {name.lower(): name for name in table.column_names}
    return next((by_lower[name] for name in names if name in by_lower), None)


def _sample(table: RawTable, column: str) -> list:
    return [v for v in table.columns[column][:SAMPLE] if v is not None]


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string inside a value (lists and objects opened a few levels deep)."""
    if isinstance(value, str):
        yield value
    elif depth < 4 and isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)


def _turn_lists(table: RawTable) -> Iterator[tuple[str, list]]:
    """(column, list of turn objects) for the sampled conversations of every column."""
    for name in table.column_names:
        for value in _sample(table, name):
            value = parse_json_list(value)
            if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
                yield name, value


def _kind_of(value: Any) -> str:
    value = parse_json_list(value)
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "turn"
    return conversation_shape(value) or "other"


def _quote(names) -> str:
    names = [repr(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# -- each shape --------------------------------------------------------------------------------
def _multimodal(table: RawTable) -> Optional[Shape]:
    found: list[str] = []
    media = [n for n in table.column_names if n.lower() in MEDIA_COLUMNS
             and any(v not in ("", [], {}) for v in _sample(table, n))]
    if media:
        found.append(f"the {_quote(media)} column{'s' if len(media) > 1 else ''}")
    parts = {n for n, turns in _turn_lists(table) for t in turns if isinstance(t.get("content"), list)
             and any(isinstance(p, dict) and p.get("type") in MEDIA_PART_TYPES for p in t["content"])}
    if parts:
        found.append(f"image or audio parts in the turns of {_quote(sorted(parts))}")
    tags: dict[str, set[str]] = {}
    for name in table.column_names:
        for value in _sample(table, name):
            for text in _strings(value):
                for tag in MEDIA_PLACEHOLDER.findall(text):
                    tags.setdefault(f"<{tag}>", set()).add(name)
    if tags:
        columns = sorted({c for cs in tags.values() for c in cs})
        found.append(f"{' '.join(sorted(tags))} placeholders in {_quote(columns)}")
    if not found:
        return None
    what = "; ".join(found)
    return Shape(
        "multimodal", f"multimodal data ({what})",
        f"multimodal data ({what}), and lora-tui fine-tunes text-only models, so the images or audio would be "
        "dropped and the text around them (placeholders included) trained alone; use a vision or audio fine-tuning "
        "tool for it, or remove the media columns and placeholders to train on the text by itself.",
    )


def _pretokenized(table: RawTable) -> Optional[Shape]:
    column = _column(table, ("input_ids",))
    values = _sample(table, column) if column else []
    if not values or not all(isinstance(v, list) and all(isinstance(i, int) for i in v[:8]) for v in values):
        return None
    others = RawTable(table.path, table.source, [n for n in table.column_names if n not in
                                                  (column, "attention_mask", "labels", "token_type_ids")],
                      table.columns, table.num_rows)
    try:
        detect_format(others)
    except DataError:
        return Shape(
            "pretokenized", f"pre-tokenized rows (token ids in {column!r})",
            f"pre-tokenized rows (token ids in {column!r} and no text beside them), and lora-tui tokenizes text "
            "itself with the model's own tokenizer, which need not be the one that made these ids; give the text "
            "they were made from (instruction/response, prompt/completion, messages or text columns).",
        )
    return Shape("supervised", f"supervised fine-tuning data; the token ids in {column!r} are ignored and the text "
                               "is tokenized again with the model's own tokenizer")


def _preference(table: RawTable) -> Optional[Shape]:
    chosen = next((n for n in table.column_names if n.lower().startswith("chosen")), None)
    rejected = next((n for n in table.column_names if n.lower().startswith("rejected")), None)
    if not (chosen and rejected):
        return None
    prompt = _column(table, PROMPT_COLUMNS)
    kind = _kind_of(next(iter(_sample(table, chosen)), None))
    if prompt:
        what = f"preference pairs (a shared prompt in {prompt!r} with {chosen!r} and {rejected!r} answers)"
        prompt_is_text = _kind_of(next(iter(_sample(table, prompt)), None)) == "text"
        columns = (f'{{"response": "{chosen}"}}' if prompt_is_text and kind == "text"
                   else f'{{"prompt": "{prompt}", "completion": "{chosen}"}}')
    else:
        what = f"preference pairs ({chosen!r} and {rejected!r}, each holding the whole exchange with its prompt)"
        role = {"messages": "messages", "sharegpt": "conversations"}.get(kind, "text")
        columns = f'{{"{role}": "{chosen}"}}'
    refusal = (f"{what}, as for DPO or reward modelling, and lora-tui trains supervised fine-tuning, which has no use "
               f"for the rejected answers; to fine-tune on the preferred answers alone set dataset.columns to {columns}, "
               "or train the pairs with a preference trainer such as TRL's DPOTrainer.")
    return Shape("preference", what, refusal, (chosen, rejected))


def _kto(table: RawTable) -> Optional[Shape]:
    label = _column(table, LABEL_COLUMNS)
    values = [v for v in table.columns[label] if v is not None] if label else []
    if not values or not all(isinstance(v, bool) for v in values):
        return None
    rest = RawTable(table.path, table.source, [n for n in table.column_names if n != label], table.columns, table.num_rows)
    try:
        if detect_format(rest) == "text":
            return None  # a text with a true/false label is a classification set, not answers to judge
    except DataError:
        pass
    false = values.count(False)
    if not false:
        return Shape("supervised", f"supervised fine-tuning data (every {label!r} is true: KTO's desirable answers only)")
    what = f"KTO data (a boolean {label!r} marks each answer desirable or not; {false:,} of {len(values):,} are false)"
    return Shape(
        "kto", what,
        f"{what}, and lora-tui trains supervised fine-tuning, which would teach the undesirable answers too; "
        f"keep only the rows whose {label!r} is true in a new file and train that, or use TRL's KTOTrainer.",
    )


def _prompt_only(table: RawTable) -> Optional[Shape]:
    prompt = _column(table, ("prompt",))
    if not prompt:
        return None
    try:
        fmt = detect_format(table)
    except DataError:
        fmt = None
    if fmt not in (None, "messages", "sharegpt"):
        return None  # a prompt with its answer: supervised
    for value in _sample(table, prompt):
        turns = parse_json_list(value)
        if not (isinstance(value, str) or isinstance(turns, list)):
            return None
        if isinstance(turns, list) and any(isinstance(t, dict) and str(t.get("role", t.get("from", ""))).lower()
                                           in ("assistant", "gpt", "model") for t in turns):
            return None
    what = f"prompt-only data (a {prompt!r} column and no answers to learn)"
    return Shape(
        "prompt_only", what, columns=(prompt,), refusal=f"{what}, as for GRPO or other online reinforcement learning, and lora-tui trains supervised fine-tuning, "
        "which learns from written answers; add them as a completion column, or use an RL trainer such as TRL's GRPOTrainer.")


def _tool_calling(table: RawTable) -> Optional[Shape]:
    found: list[str] = []
    speakers, openai = set(), set()
    for _, turns in _turn_lists(table):
        for turn in turns:
            speaker = turn.get("from")
            if isinstance(speaker, str) and speaker.lower() in SHAREGPT_TOOL_SPEAKERS:
                speakers.add(speaker)
            if turn.get("tool_calls") or turn.get("function_call"):
                openai.add("tool_calls" if turn.get("tool_calls") else "function_call")
            if turn.get("role") in ("tool", "function", "ipython"):
                openai.add(f"role {turn['role']}")
    if speakers:
        found.append(f"ShareGPT {' / '.join(sorted(speakers))} turns")
    if openai:
        found.append(f"OpenAI {' and '.join(sorted(openai))}")
    tools = _column(table, TOOLS_COLUMNS)
    if tools and any(v not in ("", "[]", [], {}) for v in _sample(table, tools)):
        found.append(f"a {tools!r} column")
    if not found:
        return None
    return Shape("tool_calling", f"tool-calling conversations ({', '.join(found)})")


def recognise(table: RawTable) -> Shape:
    """The shape of the data in `table`: what it is, and the sentence that refuses it where it cannot train."""
    for check in (_multimodal, _pretokenized, _preference, _kto, _prompt_only, _tool_calling):
        shape = check(table)
        if shape is not None:
            break
    else:
        shape = Shape("supervised", "supervised fine-tuning data")
    if table.note:
        shape.description += f"; {table.note}"
    return shape


def check_trainable(shape: Shape, table: RawTable, columns: Optional[dict]) -> Shape:
    """The shape as it will be trained, or DataError with its one sentence.

    Preference pairs train only when dataset.columns maps one of the answer columns: then the
    description says which answers are trained and that the others are not used. Prompt-only data
    trains when dataset.columns maps another column as the answer.
    """
    mapped = {column for column in (columns or {}).values() if column}
    if shape.kind == "preference":
        chosen, rejected = shape.columns
        used = next((c for c in (chosen, rejected) if c in mapped), None)
        if used:
            unused = rejected if used == chosen else chosen
            return Shape("preference", f"{shape.description}, trained as supervised fine-tuning on {used!r} as "
                                       f"dataset.columns maps it; {unused!r} is not used", columns=shape.columns)
    if shape.kind == "prompt_only" and mapped - set(shape.columns):
        return Shape("supervised", "supervised fine-tuning data, with the answers in the columns dataset.columns maps")
    if shape.refusal:
        raise DataError(f"{table.path}: {shape.refusal}")
    return shape


def tools_refusal(path: str, description: str) -> str:
    """The sentence for tool-calling data and a chat template that cannot render tools."""
    return (f"{path}: {description}, and this model's chat template has no tool support (it never mentions tools), "
            "so the tool definitions and calls could not be rendered the way the model would see them; choose a "
            "model whose chat template supports tools (such as Qwen2.5 or Llama 3.1 Instruct).")

