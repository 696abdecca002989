"""Guess a dataset's format and propose a column for each role; apply the person's choices.

Formats and their roles (DESIGN.md): `instruction` (instruction, input, response: the Alpaca and
Dolly shapes), `prompt_completion` (prompt, completion), `sharegpt` (conversations: a list of
from/value turns), `messages` (messages: OpenAI role/content turns), `text` (text).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from engine.data.load import RawTable
from engine.errors import DataError

FORMAT_ROLES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "input", "response"),
    "prompt_completion": ("prompt", "completion"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
    "text": ("text",),
}
FORMATS = tuple(FORMAT_ROLES)
OPTIONAL_ROLES = {"input"}
CONVERSATION_FORMATS = {"sharegpt", "messages"}

# Column names that usually play a role, best first (compared case-insensitively).
ROLE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "question", "query", "problem", "task", "prompt"),
    "input": ("input", "context", "inputs"),
    "response": ("output", "response", "answer", "solution", "target", "outputs"),
    "prompt": ("prompt",),
    "completion": ("completion",),
    "conversations": ("conversations", "conversation", "dialog", "dialogue", "chat", "messages", "turns"),
    "messages": ("messages", "conversation", "conversations", "chat", "dialog", "turns"),
    "text": ("text", "content", "document", "body"),
}
SHAREGPT_KEYS = ("from", "value")
MESSAGES_KEYS = ("role", "content")


def conversation_shape(value: Any) -> Optional[str]:
    """'sharegpt' or 'messages' when `value` is a list of turns of that shape, else None."""
    value = parse_json_list(value)
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        return None
    first = value[0]
    if all(key in first for key in SHAREGPT_KEYS):
        return "sharegpt"
    if all(key in first for key in MESSAGES_KEYS):
        return "messages"
    return None


def parse_json_list(value: Any) -> Any:
    """A conversation stored as a JSON string (CSV and some Parquet exports) becomes the list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _first_present(table: RawTable, column: str) -> Any:
    for value in table.columns[column][:50]:
        if value is not None:
            return value
    return None


def _match(table: RawTable, role: str, taken: set[str] = frozenset()) -> Optional[str]:
    by_lower = {name.lower(): name for name in table.column_names}
    for candidate in ROLE_CANDIDATES[role]:
        name = by_lower.get(candidate)
        if name is not None and name not in taken:
            return name
    return None


def _conversation_column(table: RawTable, shape: str) -> Optional[str]:
    """The column holding conversations of `shape`: a usual name first, then any column that does."""
    role = "conversations" if shape == "sharegpt" else "messages"
    named = _match(table, role)
    ordered = ([named] if named else []) + [name for name in table.column_names if name != named]
    for name in ordered:
        if conversation_shape(_first_present(table, name)) == shape:
            return name
    return None


def propose_columns(table: RawTable, fmt: str) -> dict[str, Optional[str]]:
    """A column for each role of `fmt` found by name (or, for conversations, by content); None if none."""
    if fmt in CONVERSATION_FORMATS:
        role = FORMAT_ROLES[fmt][0]
        column = _conversation_column(table, fmt)
        if column is None:  # the wrong shape: still propose the named column, checked later
            column = _match(table, role)
        return {role: column}
    proposal: dict[str, Optional[str]] = {}
    taken: set[str] = set()
    for role in FORMAT_ROLES[fmt]:
        column = _match(table, role, taken)
        proposal[role] = column
        if column:
            taken.add(column)
    return proposal


def detect_format(table: RawTable) -> str:
    """The format the columns suggest; DataError when nothing fits."""
    lower = {name.lower() for name in table.column_names}
    if "prompt" in lower and "completion" in lower:  # text, or TRL's conversational prompt-completion turns
        return "prompt_completion"
    for shape in ("messages", "sharegpt"):
        if _conversation_column(table, shape) is not None:
            return shape
    instruction = propose_columns(table, "instruction")
    if instruction["instruction"] and instruction["response"]:
        return "instruction"
    if _match(table, "text"):
        return "text"
    raise DataError(
        f"{table.path}: cannot tell the format from the columns {', '.join(map(repr, table.column_names))}; "
        "set dataset.format (instruction, prompt_completion, sharegpt, messages or text) and dataset.columns."
    )


def _format_from_roles(columns: dict[str, Optional[str]]) -> Optional[str]:
    """The one format whose roles the person's `columns` name, if they name exactly one."""
    named = {role for role in columns}
    fits = [fmt for fmt, roles in FORMAT_ROLES.items() if named & set(roles)]
    return fits[0] if len(fits) == 1 else None


def _looks_like(table: RawTable) -> Optional[str]:
    try:
        return detect_format(table)
    except DataError:
        return None


def resolve_mapping(
    table: RawTable, fmt: str = "auto", columns: Optional[dict[str, Optional[str]]] = None
) -> tuple[str, dict[str, Optional[str]], str]:
    """(format, role -> column, how the format was chosen) after detection and the person's choices.

    Raises DataError when a role has no column, or a named column does not exist.
    """
    columns = dict(columns or {})
    how = "given"
    if fmt in (None, "", "auto"):
        fmt = _format_from_roles(columns) if columns else None
        how = "from dataset.columns" if fmt else "detected"
        if fmt is None:
            fmt = detect_format(table)
    if fmt not in FORMAT_ROLES:
        raise DataError(f"dataset.format {fmt!r} is not known; use auto, {', '.join(FORMATS)}.")
    roles = FORMAT_ROLES[fmt]
    for role in columns:
        if role not in roles:
            raise DataError(
                f"dataset.columns.{role}: format {fmt} has no role {role!r}; its roles are {', '.join(roles)}."
            )
    mapping = propose_columns(table, fmt)
    mapping.update(columns)
    listing = ", ".join(map(repr, table.column_names))
    for role in roles:
        column = mapping.get(role)
        if column is None:
            if role in OPTIONAL_ROLES:
                continue
            looks_like = _looks_like(table)
            if looks_like and looks_like != fmt:
                raise DataError(
                    f"{table.path}: format {fmt} needs a column for {role!r}, and the file looks like the "
                    f"{looks_like} format; set dataset.format to {looks_like} (or auto), or map dataset.columns.{role} to one of {listing}."
                )
            raise DataError(
                f"{table.path}: format {fmt} needs a column for {role!r} and none was found; "
                f"set dataset.columns.{role} to one of {listing}."
            )
        if column not in table.columns:
            raise DataError(
                f"{table.path}: column {column!r} (mapped to {role!r}) does not exist; the columns are {listing}."
            )
    return fmt, {role: mapping.get(role) for role in roles}, how
