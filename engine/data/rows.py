"""Check every row's mapped values and turn them into plain records for the templates.

A row with a null or non-text value in a mapped column, or a conversation without an assistant
turn, is refused with its line or row number, or skipped and counted when the person asked for it
(`dataset.skip_invalid_rows: true`). A column that does not hold what the format says at all (a
sharegpt column of plain strings), or a file none of whose first rows fits, is refused whatever
that switch says: it is the wrong format, and skipping would not make it right.

Conversations become chat-template messages (`Conversation`): tool calls (OpenAI `tool_calls`,
ShareGPT `function_call` turns) and tool results (role `tool`, ShareGPT `observation`) keep their
structure, a `tools` column is handed to the template, and OpenAI's per-turn `weight: 0` leaves a
turn untrained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from engine.data.detect import CONVERSATION_FORMATS, MESSAGES_KEYS, SHAREGPT_KEYS, conversation_shape, parse_json_list
from engine.data.load import RawTable
from engine.errors import DataError

SKIP_HINT = "fix the row or set dataset.skip_invalid_rows: true to skip such rows"
MAX_REASONS = 5
WHOLE_FILE_CHECK = 20  # rows looked at before calling a refusal a property of the whole file

# ShareGPT speaker names seen in the wild -> chat roles ("tool_call": an assistant turn that calls a tool).
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "model": "assistant", "bot": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "function_call": "tool_call", "tool_call": "tool_call", "observation": "tool", "tool": "tool",
    "tool_response": "tool", "function_response": "tool",
}
MESSAGES_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                  "tool": "tool", "function": "tool", "ipython": "tool"}
TOOLS_COLUMNS = ("tools", "functions")
SYSTEM_COLUMN = "system"


@dataclass
class Conversation:
    """One conversation as chat-template messages, the tools it offers, and which turns are trained.

    messages: {"role": system|user|assistant|tool, "content": str}, plus `tool_calls` on assistant
    turns that call tools and `name` / `tool_call_id` on tool results where the data has them.
    trained: a flag per message; None means every assistant turn.
    """

    messages: list[dict]
    tools: Optional[list] = None
    trained: Optional[list[bool]] = None

    def is_trained(self, index: int) -> bool:
        if self.trained is not None:
            return self.trained[index]
        return self.messages[index]["role"] == "assistant"

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)


class InvalidRow(Exception):
    """One row's problem, said as the end of a sentence that starts with where the row is."""


@dataclass
class Records:
    """The usable rows, each as plain strings for its format.

    instruction: (instruction, input, response); prompt_completion: (prompt, completion), or a
    Conversation when prompt and completion hold turns (TRL's conversational form); text: (text,);
    sharegpt / messages: a Conversation.
    """

    format: str
    items: list
    row_indices: list[int]  # the table row each item came from
    skipped_rows: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    @property
    def conversational(self) -> bool:
        return any(isinstance(item, Conversation) for item in self.items)

    @property
    def tool_rows(self) -> int:
        return sum(1 for item in self.items if isinstance(item, Conversation) and item.uses_tools)


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


def _json_value(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise InvalidRow(f"{what} is not valid JSON") from None
    return value


def _tool_call(call: Any, what: str) -> dict:
    """One call in the chat templates' form: {"type": "function", "function": {"name", "arguments": dict}}."""
    if not isinstance(call, dict):
        raise InvalidRow(f"{what} is {_describe(call)}, not an object with a name and arguments")
    function = call.get("function", call)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRow(f"{what} has no function name")
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI writes the arguments as a JSON string; templates take the object
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    out = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _tool_calls(value: Any, what: str) -> list[dict]:
    calls = _json_value(value, what)
    calls = calls if isinstance(calls, list) else [calls]
    return [_tool_call(call, what) for call in calls]


def _tools(value: Any, column: str) -> Optional[list]:
    """A `tools` column's value as the list of {"type": "function", "function": {...}} the templates take."""
    tools = _json_value(value, f"column {column!r}") if value not in (None, "") else None
    if not tools:
        return None
    if not isinstance(tools, list):
        tools = [tools]
    out = []
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            out.append(tool)
        elif isinstance(tool, dict) and isinstance(tool.get("name"), str):  # a bare function schema
            out.append({"type": "function", "function": tool})
        else:
            raise InvalidRow(f"column {column!r} holds {_describe(tool)} where a function definition with a name belongs")
    return out


def _content(value: Any, where: str, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)  # OpenAI's list of text parts
    raise InvalidRow(f"{where} has {key} {_describe(value)}, not text")


def _turns(value: Any, column: str, fmt: Optional[str]) -> list[dict]:
    """Chat-template messages from a list of ShareGPT or OpenAI turns (`fmt` None: judged by the keys)."""
    turns = parse_json_list(value)
    if turns is None:
        raise InvalidRow(f"column {column!r} is null, not a conversation")
    if isinstance(turns, dict):  # a single turn (LLaMA-Factory's ranking `chosen`)
        turns = [turns]
    if not isinstance(turns, list):
        raise InvalidRow(f"column {column!r} is {_describe(turns)}, not a list of turns")
    if not turns:
        raise InvalidRow(f"the conversation in column {column!r} is empty")
    fmt = fmt or conversation_shape(turns) or "messages"
    role_key, text_key = SHAREGPT_KEYS if fmt == "sharegpt" else MESSAGES_KEYS
    names = SHAREGPT_ROLES if fmt == "sharegpt" else MESSAGES_ROLES
    out: list[dict] = []
    for number, turn in enumerate(turns, start=1):
        where = f"turn {number} of column {column!r}"
        if not isinstance(turn, dict):
            raise InvalidRow(f"{where} is {_describe(turn)}, not an object")
        speaker = turn.get(role_key)
        role = names.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise InvalidRow(f"{where} has {role_key} {speaker!r}; use one of {', '.join(sorted(set(names)))}")
        content = turn.get(text_key)
        if role == "tool_call":  # ShareGPT function_call: the value is the call as JSON
            out.append({"role": "assistant", "content": "", "tool_calls": _tool_calls(content, f"the function call in {where}")})
            continue
        message: dict = {"role": role}
        calls = turn.get("tool_calls") or turn.get("function_call")
        if role == "assistant" and calls:
            message["tool_calls"] = _tool_calls(calls, f"the tool call in {where}")
            message["content"] = "" if content is None else _content(content, where, text_key)
        else:
            message["content"] = _content(content, where, text_key)
        for key in ("name", "tool_call_id"):
            if isinstance(turn.get(key), str):
                message[key] = turn[key]
        if turn.get("weight") == 0:  # OpenAI's fine-tuning format: this assistant turn is not trained
            message["weight"] = 0
        out.append(message)
    return out


def _trained_flags(messages: list[dict], first_trained: int = 0) -> list[bool]:
    """Which messages are trained: assistant turns from `first_trained` on, but not those of weight 0."""
    weights = [message.pop("weight", 1) for message in messages]
    return [i >= first_trained and m["role"] == "assistant" and w != 0 for i, (m, w) in enumerate(zip(messages, weights))]


def _conversation(value: Any, column: str, fmt: str, tools: Optional[list] = None, system: Any = None) -> Conversation:
    messages = _turns(value, column, fmt)
    if isinstance(system, str) and system and messages[0]["role"] != "system":  # LLaMA-Factory's `system` column
        messages.insert(0, {"role": "system", "content": system})
    flags = _trained_flags(messages)
    conversation = Conversation(messages, tools, None if flags == [m["role"] == "assistant" for m in messages] else flags)
    if not any(conversation.is_trained(i) for i in range(len(messages))):
        if any(m["role"] == "assistant" for m in messages):
            raise InvalidRow(f"every assistant turn in column {column!r} has weight 0, so nothing in it would be trained")
        raise InvalidRow(f"the conversation in column {column!r} has no assistant turn, so nothing in it would be trained")
    return conversation


def _is_turns(value: Any) -> bool:
    value = parse_json_list(value)
    return isinstance(value, dict) and ("role" in value or "from" in value) or conversation_shape(value) is not None


def _prompt_completion(prompt: Any, completion: Any, pro: str, com: str, tools: Optional[list]):
    """(prompt, completion) for text; a Conversation trained on the completion's turns for TRL's
    conversational prompt-completion form (and a text completion after a conversation prompt)."""
    if not (_is_turns(prompt) or _is_turns(completion)):
        return (_text(prompt, pro), _text(completion, com))
    asked = _turns(prompt, pro, None) if _is_turns(prompt) else [{"role": "user", "content": _text(prompt, pro)}]
    answer = _turns(completion, com, None) if _is_turns(completion) else [{"role": "assistant", "content": _text(completion, com)}]
    messages = asked + answer
    conversation = Conversation(messages, tools, _trained_flags(messages, first_trained=len(asked)))
    if not any(conversation.trained):
        raise InvalidRow(f"column {com!r} holds no assistant turn, so nothing in it would be trained")
    return conversation


def _column_named(table: RawTable, names: tuple[str, ...]) -> Optional[str]:
    by_lower = {name.lower(): name for name in table.column_names}
    return next((by_lower[n] for n in names if n in by_lower), None)


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
        if fmt == "prompt_completion" and any(_is_turns(v) for v in values):
            continue  # TRL's conversational prompt-completion: lists of turns
        if values and not any(isinstance(v, str) for v in values):
            raise DataError(
                f"{table.path}: format {fmt} expects text in column {column!r} (role {role!r}), "
                f"but it holds {_describe(values[0])}; set dataset.format to the file's real format or auto."
            )


def build_records(table: RawTable, fmt: str, mapping: dict[str, Optional[str]], skip_invalid_rows: bool) -> Records:
    """Every row as a record, or DataError naming the first bad row (unless skipping)."""
    check_shape(table, fmt, mapping)
    cols = table.columns
    tools_column = _column_named(table, TOOLS_COLUMNS)
    system_column = _column_named(table, (SYSTEM_COLUMN,)) if fmt in CONVERSATION_FORMATS else None

    def tools_of(i):
        return _tools(cols[tools_column][i], tools_column) if tools_column else None

    if fmt == "instruction":
        ins, inp, res = mapping["instruction"], mapping.get("input"), mapping["response"]
        empty = [None] * table.num_rows

        def make(i):
            return (_text(cols[ins][i], ins), _optional_text((cols[inp] if inp else empty)[i], inp or "input"),
                    _text(cols[res][i], res))
    elif fmt == "prompt_completion":
        pro, com = mapping["prompt"], mapping["completion"]

        def make(i):
            return _prompt_completion(cols[pro][i], cols[com][i], pro, com, tools_of(i))
    elif fmt == "text":
        txt = mapping["text"]

        def make(i):
            return (_text(cols[txt][i], txt),)
    elif fmt in CONVERSATION_FORMATS:
        con = mapping["conversations" if fmt == "sharegpt" else "messages"]

        def make(i):
            system = cols[system_column][i] if system_column and system_column != con else None
            return _conversation(cols[con][i], con, fmt, tools_of(i), system)
    else:  # resolve_mapping already refused it; kept so a new format cannot slip through silently
        raise DataError(f"dataset.format {fmt!r} is not known.")

    records = Records(fmt, [], [])
    for i in range(table.num_rows):
        try:
            item = make(i)
        except InvalidRow as problem:
            if not skip_invalid_rows:
                raise DataError(f"{table.where(i)}: {problem}; {_remedy(table, fmt, make, i)}.") from None
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


def _remedy(table: RawTable, fmt: str, make, failed: int) -> str:
    """What to do about a bad row: skip such rows, unless skipping cannot help (no row fits, or the
    file is one row), where the file is not what the format and columns say."""
    if table.num_rows == 1:
        return "fix it (the file has no other row to train on)"
    checked = range(min(table.num_rows, max(WHOLE_FILE_CHECK, failed + 1)))
    for i in checked:
        try:
            make(i)
        except (InvalidRow, DataError):
            continue
        return SKIP_HINT
    return (f"none of the first {len(checked)} rows fits either, so the file does not hold {fmt} data as mapped; "
            "check dataset.format and dataset.columns")
