"""Render records into the text the model sees, as segments flagged trained or not.

Two layouts: the seed's Alpaca layout (`### Instruction:` / `### Input:` / `### Response:`) and the
model's own chat template. Conversations (sharegpt, messages) always use the chat template: a
multi-turn dialogue has no Alpaca form. A segment is (text, trained); joined, the segments are the
exact text, and the trained flags say which characters the loss is computed on.
"""

from __future__ import annotations

from typing import Optional

from engine.data.detect import CONVERSATION_FORMATS
from engine.errors import DataError

Segment = tuple[str, bool]

# Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca, PROMPT_DICT), as the seed recipe uses it.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt up to and including `### Response:\\n`; the Input block only when input is non-empty."""
    if input:
        return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)


class Renderer:
    """Turns records of one format into segments, for one tokenizer and one template choice."""

    def __init__(self, tokenizer, fmt: str, template: str = "alpaca", completion_only_loss: bool = True):
        self.tokenizer = tokenizer
        self.format = fmt
        self.completion_only_loss = completion_only_loss
        # Conversations have no Alpaca form; they use the chat template whatever `template` says.
        self.template = "chat" if fmt in CONVERSATION_FORMATS else template
        self.eos = tokenizer.eos_token or ""
        self.bos = self._leading_special_text(tokenizer)
        if self.template == "chat" and not getattr(tokenizer, "chat_template", None):
            if fmt in CONVERSATION_FORMATS:
                raise DataError(
                    f"format {fmt} needs the model's chat template, and this model's tokenizer has none; "
                    "use a chat (instruct) model, or instruction-format data with dataset.template: alpaca."
                )
            raise DataError("dataset.template is chat, but this model's tokenizer has no chat template; set dataset.template: alpaca.")

    @staticmethod
    def _leading_special_text(tokenizer) -> str:
        """The special tokens the tokenizer puts before a text (a BOS for Llama-style models), as text.

        Texts are tokenized without special tokens so that a chat template's own BOS is not doubled;
        the Alpaca layout and plain text get the tokenizer's usual prefix written into the text instead.
        """
        with_special = tokenizer("a")["input_ids"]
        without = tokenizer("a", add_special_tokens=False)["input_ids"]
        if len(with_special) > len(without) and with_special[-len(without):] == without:
            return tokenizer.decode(with_special[: len(with_special) - len(without)], clean_up_tokenization_spaces=False)
        return ""

    # -- one record -> segments ------------------------------------------------------------------
    def render(self, item) -> list[Segment]:
        fmt = self.format
        if fmt == "text":
            segments = [(self.bos + item[0] + self.eos, True)]
        elif fmt in CONVERSATION_FORMATS:
            segments = self._chat_segments(list(item))
        else:
            if fmt == "instruction":
                instruction, input, response = item
            else:  # prompt_completion: the prompt is the instruction, with no input
                instruction, input, response = item[0], "", item[1]
            if self.template == "alpaca":
                segments = [(self.bos + alpaca_prompt(instruction, input), False), (response + self.eos, True)]
            else:
                user = f"{instruction}\n\n{input}" if input else instruction
                segments = self._chat_segments([("user", user), ("assistant", response)])
        if not self.completion_only_loss:
            segments = [(text, True) for text, _ in segments]
        return [(text, trained) for text, trained in segments if text]

    def _apply(self, turns: list[tuple[str, str]], generation_prompt: bool) -> str:
        messages = [{"role": role, "content": content} for role, content in turns]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _chat_segments(self, turns: list[tuple[str, str]]) -> list[Segment]:
        """Every assistant turn trained: render the dialogue turn by turn and cut the text at each step.

        The text before an assistant turn is the render of the turns so far with the generation
        prompt; the turn itself (with the template's end-of-turn marker) is what the full render adds.
        Templates that rewrite earlier turns break this prefix property; then only the last
        assistant turn is trained, which such templates are built for.
        """
        segments: list[Segment] = []
        done = ""
        for index, (role, _) in enumerate(turns):
            if role != "assistant":
                continue
            before = self._apply(turns[:index], generation_prompt=True)
            through = self._apply(turns[: index + 1], generation_prompt=False)
            if not (before.startswith(done) and through.startswith(before)):
                return self._last_turn_segments(turns)
            segments.append((before[len(done):], False))
            segments.append((through[len(before):], True))
            done = through
        if turns[-1][0] == "assistant":
            return segments  # the last render was the whole dialogue already
        full = self._apply(turns, generation_prompt=False)
        if not full.startswith(done):
            return self._last_turn_segments(turns)
        segments.append((full[len(done):], False))
        return segments

    def _last_turn_segments(self, turns: list[tuple[str, str]]) -> list[Segment]:
        last = max(i for i, (role, _) in enumerate(turns) if role == "assistant")
        before = self._apply(turns[:last], generation_prompt=True)
        through = self._apply(turns[: last + 1], generation_prompt=False)
        if not through.startswith(before):
            raise DataError(
                "the model's chat template renders an assistant turn differently from its generation prompt, "
                "so the trained part cannot be marked; set dataset.completion_only_loss: false."
            )
        full = self._apply(turns, generation_prompt=False)
        tail = full[len(through):] if full.startswith(through) else ""
        return [(before, False), (through[len(before):], True), (tail, False)]


def segments_text(segments: list[Segment]) -> str:
    return "".join(text for text, _ in segments)


def describe_template(renderer: Optional[Renderer]) -> str:
    if renderer is None:
        return ""
    return "Alpaca layout" if renderer.template == "alpaca" else "the model's chat template"
