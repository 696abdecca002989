"""Check every row's mapped values and turn them into plain records for the templates.

A row with a null or non-text value in a mapped column, or a conversation without an assistant
turn, is refused with its line or row number, or skipped and counted when the person asked for it
(`dataset.skip_invalid_rows: true`). A column that does not hold what the format says at all (a
sharegpt column of plain strings) is refused whatever that switch says: it is the wrong format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from engine.data.detect import CONVERSATION_FORMATS, MESSAGES_KEYS, SHAREGPT_KEYS, conversation_shape, parse_json_list
from engine.data.load import RawTable
from engine.errors import DataError

SKIP_HINT = "fix the row or set dataset.skip_invalid_rows: true to skip such rows"
MAX_REASONS = 5

# ShareGPT speaker names seen in the wild -> chat roles.
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "model": "assistant", "bot": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
}
MESSAGES_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class InvalidRow(Exception):
    """One row's problem, said as the end of a sentence that starts with where the row is."""


@dataclass
class Records:
    """The usable rows, each as plain strings for its format.

    instruction: (instruction, input, response); prompt_completion: (prompt, completion);
    text: (text,); sharegpt / messages: a list of (role, content) with roles system/user/assistant.
    """

    format: str
    items: list
    row_indices: list[int]  # the table row each item came from
    skipped_rows: int = 0
    skip_reasons: list[str] = field(default_factory=list)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _text(value: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    raise InvalidRow(f"column {column!r} is {_describe(value)}, not text")


def _optional_text(value: Any, column: str) -> str:
    # An absent Alpaca `input` is written as null as often as as "": both mean "no input".
    return "" if value is None else _text(value, column)


def _conversation(value: Any, column: str, fmt: str) -> list[tuple[str, str]]:
    turns = parse_json_list(value)
    if turns is None:
        raise InvalidRow(f"column {column!r} is null, not a conversation")
    if not isinstance(turns, list):
        raise InvalidRow(f"column {column!r} is {_describe(turns)}, not a list of turns")
    if not turns:
        raise InvalidRow(f"the conversation in column {column!r} is empty")
    role_key, text_key = SHAREGPT_KEYS if fmt == "sharegpt" else MESSAGES_KEYS
    names = SHAREGPT_ROLES if fmt == "sharegpt" else MESSAGES_ROLES
    out: list[tuple[str, str]] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise InvalidRow(f"turn {number} of column {column!r} is {_describe(turn)}, not an object")
        speaker = turn.get(role_key)
        role = names.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise InvalidRow(
                f"turn {number} of column {column!r} has {role_key} {speaker!r}; "
                f"use one of {', '.join(sorted(set(names)))}"
            )
        content = turn.get(text_key)
        if not isinstance(content, str):
            raise InvalidRow(f"turn {number} of column {column!r} has {text_key} {_describe(content)}, not text")
        out.append((role, content))
    if not any(role == "assistant" for role, _ in out):
        raise InvalidRow(f"the conversation in column {column!r} has no assistant turn, so nothing in it would be trained")
    return out


def check_shape(table: RawTable, fmt: str, mapping: dict[str, Optional[str]]) -> None:
    """Refuse a file that is not the format it claims, judged on the first rows that have a value."""
    if fmt in CONVERSATION_FORMATS:
        column = mapping[fmt if fmt == "messages" else "conversations"]
        values = [v for v in table.columns[column][:20] if v is not None]
        if not values:
            return
        shapes = {conversation_shape(v) for v in values}
        if fmt in shapes:
            return
        other = "sharegpt" if fmt == "messages" else "messages"
        if other in shapes:
            keys = "/".join(SHAREGPT_KEYS if other == "sharegpt" else MESSAGES_KEYS)
            raise DataError(
                f"{table.path}: column {column!r} holds turns with {keys} keys, which is the {other} format, "
                f"not {fmt}; set dataset.format to {other} or auto."
            )
        want = "/".join(SHAREGPT_KEYS if fmt == "sharegpt" else MESSAGES_KEYS)
        raise DataError(
            f"{table.path}: format {fmt} expects column {column!r} to hold lists of turns with {want} keys, "
            f"but it holds {_describe(parse_json_list(values[0]))}; set dataset.format to the file's real format or auto."
        )
    for role, column in mapping.items():
        if column is None:
            continue
        values = [v for v in table.columns[column][:20] if v is not None]
        if values and not any(isinstance(v, str) for v in values):
            raise DataError(
                f"{table.path}: format {fmt} expects text in column {column!r} (role {role!r}), "
                f"but it holds {_describe(values[0])}; set dataset.format to the file's real format or auto."
            )


def build_records(table: RawTable, fmt: str, mapping: dict[str, Optional[str]], skip_invalid_rows: bool) -> Records:
    """Every row as a record, or DataError naming the first bad row (unless skipping)."""
    check_shape(table, fmt, mapping)
    cols = table.columns
    if fmt == "instruction":
        ins, inp, res = mapping["instruction"], mapping.get("input"), mapping["response"]
        empty = [None] * table.num_rows

        def make(i):
            return (_text(cols[ins][i], ins), _optional_text((cols[inp] if inp else empty)[i], inp or "input"),
                    _text(cols[res][i], res))
    elif fmt == "prompt_completion":
        pro, com = mapping["prompt"], mapping["completion"]

        def make(i):
            return (_text(cols[pro][i], pro), _text(cols[com][i], com))
    elif fmt == "text":
        txt = mapping["text"]

        def make(i):
            return (_text(cols[txt][i], txt),)
    elif fmt in CONVERSATION_FORMATS:
        con = mapping["conversations" if fmt == "sharegpt" else "messages"]

        def make(i):
            return _conversation(cols[con][i], con, fmt)
    else:  # resolve_mapping already refused it; kept so a new format cannot slip through silently
        raise DataError(f"dataset.format {fmt!r} is not known.")

    records = Records(fmt, [], [])
    for i in range(table.num_rows):
        try:
            item = make(i)
        except InvalidRow as problem:
            if not skip_invalid_rows:
                raise DataError(f"{table.where(i)}: {problem}; {SKIP_HINT}.") from None
            records.skipped_rows += 1
            if len(records.skip_reasons) < MAX_REASONS:
                records.skip_reasons.append(f"{table.where(i)}: {problem}")
            continue
        records.items.append(item)
        records.row_indices.append(i)
    if not records.items:
        raise DataError(
            f"{table.path}: all {table.num_rows} rows were skipped as invalid (first: {records.skip_reasons[0]}); "
            "check dataset.format and dataset.columns."
        )
    return records
