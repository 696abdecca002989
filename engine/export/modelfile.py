"""An Ollama `Modelfile` beside a GGUF: the prompt layout the model was trained on, its stop tokens.

Ollama renders prompts with Go's text/template, not Jinja. Rather than translating a Jinja chat
template (loops, macros, filters), the layout is *measured*: the chat template is rendered for
sentinel messages and cut where they appear, which gives each role's text before and after its
content, the generation prompt, and a system prompt the template adds by itself (SmolLM2's
"You are a helpful AI assistant named SmolLM ..."). The Go template emitted uses only `range`,
`if`/`else if`/`eq`, and fields, with no whitespace trimming (`{{-`), so its literal newlines are
the chat template's own. The Alpaca layout is its fixed text with `{{ .Prompt }}`.

`render_go_template` renders that subset (enough to check what this module writes against the
project's own renderer, tests/test_gguf.py), so the check needs no Go toolchain or Ollama.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from engine.data.templates import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT

SENTINELS = {"system": "\x01SYSTEM\x01", "user": "\x01USER\x01", "assistant": "\x01ASSISTANT\x01"}
ROLES = ("system", "user", "assistant")


def _go_string(text: str) -> str:
    """Literal text inside a Go template: `{{` would start an action, so it is written as an action."""
    return text.replace("{{", '{{ "{{" }}')


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class Layout:
    """Each role's text around its content, the generation prompt, and the template's own system prompt."""

    def __init__(self, before: dict[str, str], after: dict[str, str], generation: str, default_system: str, head: str):
        self.before, self.after, self.generation = before, after, generation
        self.default_system, self.head = default_system, head


def measure_chat_template(tokenizer) -> Layout:
    """Render the model's chat template for sentinel messages and cut it where they appear."""
    s, u, a = SENTINELS["system"], SENTINELS["user"], SENTINELS["assistant"]

    def render(messages, generation=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    system, user, assistant = ({"role": r, "content": c} for r, c in (("system", s), ("user", u), ("assistant", a)))
    full = render([system, user, assistant, user], generation=True)
    # The text between two contents is the first role's closing text and the next role's header.
    sys_after, user_before = _split_between(full[full.index(s) + len(s): full.index(u)], "user")
    user_after, assistant_before = _split_between(full[full.index(u) + len(u): full.index(a)], "assistant")
    assistant_after, user_before_2 = _split_between(full[full.index(a) + len(a): full.rindex(u)], "user")
    if user_before_2 != user_before:
        raise ValueError("the chat template renders a second user turn differently from the first")
    tail = full[full.rindex(u) + len(u):]
    if not tail.startswith(user_after):
        raise ValueError("the chat template closes the last user turn differently")
    generation = tail[len(user_after):]
    # The system header is the user header with the role's name changed, and what precedes it (a BOS) is the head.
    opening = full[: full.index(s)]
    header = user_before.replace("user", "system")
    head, sys_before = (opening[: -len(header)], header) if header and opening.endswith(header) else ("", opening)
    # A system prompt the template adds when the conversation has none (SmolLM2 names itself).
    alone = render([user], generation=True)
    start = alone[len(head): alone.index(u) - len(user_before)] if alone.startswith(head) else ""
    default_system = ""
    if start.startswith(sys_before) and start.endswith(sys_after) and len(start) > len(sys_before) + len(sys_after):
        default_system = start[len(sys_before): len(start) - len(sys_after)]
    before = {"system": sys_before, "user": user_before, "assistant": assistant_before}
    after = {"system": sys_after, "user": user_after, "assistant": assistant_after}
    return Layout(before, after, generation, default_system, head)


def _split_between(text: str, next_role: str) -> tuple[str, str]:
    """Split the text between two messages' contents into (the first's closing text, the next's header):
    at the special token that opens the next role's header (`<|im_start|>user`, `<|start_header_id|>user`),
    else at the start of the line that names the role, else all of it is the next role's header."""
    found = None
    for match in re.finditer(re.escape(next_role), text):
        found = match
    if found is None:
        return "", text
    opener = None
    for marker in re.finditer(r"<\|?[^<>]*\|?>|\[[A-Z_]+\]", text[: found.start()]):
        opener = marker
    if opener is not None and text[opener.end(): found.start()].strip() == "":
        cut = opener.start()
    else:
        line = text.rfind("\n", 0, found.start())
        cut = line + 1 if line >= 0 else found.start()
    return text[:cut], text[cut:]


def chat_go_template(layout: Layout) -> str:
    parts = [_go_string(layout.head), "{{ range .Messages }}"]
    for index, role in enumerate(ROLES):
        keyword = "if" if index == 0 else "else if"
        parts.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{_go_string(layout.before[role])}{{{{ .Content }}}}'
                     f"{_go_string(layout.after[role])}")
    parts.append("{{ end }}{{ end }}")
    parts.append(_go_string(layout.generation))
    return "".join(parts)


def alpaca_go_template(instruction: Optional[str] = None) -> str:
    """The Alpaca layout with the prompt as the instruction; with `instruction` given, the layout with
    an `### Input:` block whose input is the prompt (Ollama has one prompt, not two fields)."""
    if instruction is None:
        before, after = ALPACA_PROMPT_NO_INPUT.split("{instruction}")
    else:
        before, after = ALPACA_PROMPT_INPUT.replace("{instruction}", instruction).split("{input}")
    return _go_string(before) + "{{ .Prompt }}" + _go_string(after) + "{{ .Response }}"


def _alpaca_instruction(session) -> tuple[Optional[str], int, int]:
    """For instruction data with an input column: its most common instruction, in how many rows, of how many."""
    from collections import Counter

    from engine.evaluation.evaluate import _records

    records = _records(session, session.dataset.path, given_file=False)
    if records.format != "instruction":
        return None, 0, 0
    with_input = [item[0] for item in records.items if item[1]]
    if not with_input:
        return None, 0, 0
    instruction, count = Counter(with_input).most_common(1)[0]
    return instruction, count, len(records.items)


def modelfile_text(gguf_name: str, template: str, stops: list[str], system: str = "", comments: tuple[str, ...] = ()) -> str:
    lines = [f"# {line}" for line in comments]
    lines += [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def _layout_kind(run_dir: Path, session) -> str:
    from engine.data.detect import CONVERSATION_FORMATS
    from engine.evaluation.generate import _data_format

    fmt = _data_format(run_dir, session)
    if fmt == "text":
        return "text"
    return "chat" if session.dataset.template == "chat" or fmt in CONVERSATION_FORMATS else "alpaca"


def build_modelfile(run_dir: Path, gguf: Path, folder: Path, session, add_bos: bool = False) -> tuple[str, str]:
    """(Modelfile text, what layout it uses in words). `add_bos`: the GGUF's tokenizer.ggml.add_bos_token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=session.model.trust_remote_code)
    kind = _layout_kind(run_dir, session)
    stops = []
    for token in [tokenizer.eos_token, *_generation_eos(folder, tokenizer)]:
        if token and token not in stops:
            stops.append(token)
    if kind == "chat":
        layout = measure_chat_template(tokenizer)
        # llama.cpp and Ollama put the BOS before the prompt themselves when the GGUF asks for one
        # (the Alpaca layout's BOS, from the tokenizer, comes that way too).
        if add_bos and tokenizer.bos_token and layout.head.startswith(tokenizer.bos_token):
            layout.head = layout.head[len(tokenizer.bos_token):]
        end = layout.after["assistant"].strip()
        if end and end not in stops:
            stops.insert(0, end)
        comments = ("Written by lora-tui: the model's chat template as trained, with its stop tokens.",)
        text = modelfile_text(gguf.name, chat_go_template(layout), stops, layout.default_system, comments)
        return text, "the chat template"
    if kind == "text":
        return modelfile_text(gguf.name, "{{ .Prompt }}{{ .Response }}", stops), "no layout (plain text)"
    instruction, count, total = _alpaca_instruction(session)
    if instruction is None:
        comments = ("Written by lora-tui: the Alpaca layout the model was trained on; your prompt is the instruction.",)
        return modelfile_text(gguf.name, alpaca_go_template(), stops, comments=comments), "the Alpaca layout"
    comments = ("Written by lora-tui: the Alpaca layout with an ### Input: block, as trained. Ollama has one prompt,",
                "so your prompt is the input and the instruction is the run's most common one "
                f"({count} of {total} rows); edit it here to ask another.")
    text = modelfile_text(gguf.name, alpaca_go_template(instruction), stops, comments=comments)
    return text, "the Alpaca layout (your prompt is the input)"


def _generation_eos(folder: Path, tokenizer) -> list[str]:
    try:
        eos = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError):
        return []
    ids = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    return [tokenizer.convert_ids_to_tokens(i) for i in ids]


def ollama_name(run_dir: Path) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", Path(run_dir).resolve().name.lower()).strip("-.") or "lora-tui-model"


def write_modelfile(run_dir: Path, gguf: Path, folder: Path, session, add_bos: bool = False) -> dict:
    text, layout = build_modelfile(run_dir, gguf, folder, session, add_bos)
    path = gguf.parent / "Modelfile"
    path.write_text(text, encoding="utf-8")
    command = f"cd {gguf.parent} && ollama create {ollama_name(run_dir)} -f Modelfile"
    return {"modelfile": str(path), "modelfile_layout": layout, "ollama_command": command}


# -- a renderer for the Go-template subset written above ---------------------------------------------------

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)


def parse_modelfile(text: str) -> dict:
    """FROM, TEMPLATE, SYSTEM and the stop PARAMETERs of a Modelfile as written above."""
    out: dict = {"stop": []}
    for key in ("TEMPLATE", "SYSTEM"):
        match = re.search(rf'^{key} """(.*?)"""$', text, re.S | re.M)
        out[key.lower()] = match.group(1) if match else ""
    out["from"] = re.search(r"^FROM (.+)$", text, re.M).group(1)
    out["comments"] = re.findall(r"^# (.*)$", text, re.M)
    out["stop"] = [json.loads(v) for v in re.findall(r"^PARAMETER stop (.+)$", text, re.M)]
    return out


def render_go_template(template: str, data: dict) -> str:
    """Render `template` (range, if / else if / else, eq, fields, string literals; no trimming) with `data`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(template):
        if match.start() > pos:
            tokens.append(("text", template[pos:match.start()]))
        tokens.append(("action", match.group(1).strip()))
        pos = match.end()
    if pos < len(template):
        tokens.append(("text", template[pos:]))
    out: list[str] = []
    _run(tokens, 0, len(tokens), data, out)
    return "".join(out)


def _value(expr: str, scope: dict):
    expr = expr.strip()
    if expr.startswith('"'):
        return json.loads(expr)
    if expr.startswith("eq "):
        left, right = re.match(r'eq\s+(\S+)\s+(".*"|\S+)$', expr).groups()
        return _value(left, scope) == _value(right, scope)
    if expr.startswith("not "):
        return not _value(expr[4:], scope)
    if expr.startswith("."):
        value = scope
        for name in filter(None, expr[1:].split(".")):
            value = value.get(name, "") if isinstance(value, dict) else ""
        return value
    raise ValueError(f"unsupported template expression {expr!r}")


def _block_end(tokens, start: int) -> list[int]:
    """Indices of the else branches and the matching end of the block opened at tokens[start]."""
    depth, marks = 0, []
    for index in range(start + 1, len(tokens)):
        kind, body = tokens[index]
        if kind != "action":
            continue
        if body.startswith(("if ", "range ")):
            depth += 1
        elif body == "end":
            if depth == 0:
                marks.append(index)
                return marks
            depth -= 1
        elif depth == 0 and (body == "else" or body.startswith("else if ")):
            marks.append(index)
    raise ValueError("unclosed block in template")


def _run(tokens, start: int, stop: int, scope: dict, out: list[str]) -> None:
    index = start
    while index < stop:
        kind, body = tokens[index]
        if kind == "text":
            out.append(body)
            index += 1
            continue
        if body.startswith("range "):
            end = _block_end(tokens, index)[-1]
            for item in _value(body[6:], scope) or []:
                _run(tokens, index + 1, end, item, out)
            index = end + 1
        elif body.startswith("if "):
            marks = _block_end(tokens, index)
            branches, condition, begin = [], body[3:], index + 1
            for mark in marks:
                branches.append((condition, begin, mark))
                label = tokens[mark][1]
                condition = label[8:] if label.startswith("else if ") else None if label == "else" else ""
                begin = mark + 1
            for condition, first, last in branches:
                if condition is None or (condition and _value(condition, scope)):
                    _run(tokens, first, last, scope, out)
                    break
            index = marks[-1] + 1
        else:
            value = _value(body, scope)
            out.append("" if value is None else str(value))
            index += 1
