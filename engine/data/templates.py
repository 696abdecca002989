"""Render records into the text the model sees, as segments flagged trained or not.

Two layouts: the seed's Alpaca layout (`### Instruction:` / `### Input:` / `### Response:`) and the
model's own chat template. Conversations (sharegpt, messages, conversational prompt/completion)
always use the chat template: a multi-turn dialogue has no Alpaca form; their tool definitions go to
the template as `tools=`, as TRL's SFTTrainer passes a `tools` column. A segment is (text, trained);
joined, the segments are the exact text, and the trained flags say which characters the loss is
computed on. Plain text uses no layout at all.
"""

from __future__ import annotations

from typing import Optional

from engine.data.detect import CONVERSATION_FORMATS
from engine.data.rows import Conversation
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

    def __init__(self, tokenizer, fmt: str, template: str = "alpaca", completion_only_loss: bool = True,
                 conversational: bool = False):
        self.tokenizer = tokenizer
        self.format = fmt
        self.completion_only_loss = completion_only_loss
        # Conversations have no Alpaca form; they use the chat template whatever `template` says.
        conversational = conversational or fmt in CONVERSATION_FORMATS
        self.template = "chat" if conversational else template
        self.eos = tokenizer.eos_token or ""
        self.bos = self._leading_special_text(tokenizer)
        if self.template == "chat" and not getattr(tokenizer, "chat_template", None):
            if conversational:
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
        if isinstance(item, Conversation):
            segments = self._chat_segments(item)
        elif fmt == "text":
            segments = [(self.bos + item[0] + self.eos, True)]
        elif fmt in CONVERSATION_FORMATS:  # (role, content) pairs, as engine.evaluation builds a prompt
            segments = self._chat_segments(Conversation([{"role": r, "content": c} for r, c in item]))
        else:
            if fmt == "instruction":
                instruction, input, response = item
            else:  # prompt_completion: the prompt is the instruction, with no input
                instruction, input, response = item[0], "", item[1]
            if self.template == "alpaca":
                segments = [(self.bos + alpaca_prompt(instruction, input), False), (response + self.eos, True)]
            else:
                user = f"{instruction}\n\n{input}" if input else instruction
                segments = self._chat_segments(Conversation([{"role": "user", "content": user},
                                                             {"role": "assistant", "content": response}]))
        if not self.completion_only_loss:
            segments = [(text, True) for text, _ in segments]
        return [(text, trained) for text, trained in segments if text]

    def _apply(self, conversation: Conversation, upto: int, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            conversation.messages[:upto], tools=conversation.tools or None, tokenize=False,
            add_generation_prompt=generation_prompt,
        )

    def _chat_segments(self, conversation: Conversation) -> list[Segment]:
        """Every trained (assistant) turn trained: render the dialogue turn by turn and cut the text at each step.

        The text before an assistant turn is the render of the turns so far with the generation
        prompt; the turn itself (with the template's end-of-turn marker) is what the full render adds.
        Templates that rewrite earlier turns break this prefix property; then only the last
        trained turn is trained, which such templates are built for.
        """
        segments: list[Segment] = []
        done = ""
        count = len(conversation.messages)
        for index in range(count):
            if not conversation.is_trained(index):
                continue
            before = self._apply(conversation, index, generation_prompt=True)
            through = self._apply(conversation, index + 1, generation_prompt=False)
            if not (before.startswith(done) and through.startswith(before)):
                return self._last_turn_segments(conversation)
            segments.append((before[len(done):], False))
            segments.append((through[len(before):], True))
            done = through
        if segments and conversation.is_trained(count - 1):
            return segments  # the last render was the whole dialogue already
        full = self._apply(conversation, count, generation_prompt=False)
        if not full.startswith(done):
            return self._last_turn_segments(conversation)
        segments.append((full[len(done):], False))
        return segments

    def _last_turn_segments(self, conversation: Conversation) -> list[Segment]:
        last = max(i for i in range(len(conversation.messages)) if conversation.is_trained(i))
        before = self._apply(conversation, last, generation_prompt=True)
        through = self._apply(conversation, last + 1, generation_prompt=False)
        if not through.startswith(before):
            raise DataError(
                "the model's chat template renders an assistant turn differently from its generation prompt, "
                "so the trained part cannot be marked; set dataset.completion_only_loss: false."
            )
        full = self._apply(conversation, len(conversation.messages), generation_prompt=False)
        tail = full[len(through):] if full.startswith(through) else ""
        return [(before, False), (through[len(before):], True), (tail, False)]


def supports_tools(tokenizer) -> bool:
    """Whether the model's chat template renders tool definitions: its source mentions `tools`."""
    template = getattr(tokenizer, "chat_template", None)
    sources = template.values() if isinstance(template, dict) else [template or ""]
    return any("tools" in source for source in sources)


def segments_text(segments: list[Segment]) -> str:
    return "".join(text for text, _ in segments)


def describe_template(renderer: Optional[Renderer]) -> str:
    if renderer is None:
        return ""
    if renderer.format == "text":
        return "no layout (plain text as written)"
    return "Alpaca layout" if renderer.template == "alpaca" else "the model's chat template"
