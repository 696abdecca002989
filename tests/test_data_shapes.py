"""Every shape of dataset people bring is trained as what it is, or named and refused in one sentence.

The files under tests/data/shapes/ are small, written here in the shapes other projects document:
LLaMA-Factory's dataset_info.json formats (alpaca, sharegpt with function_call / observation and
tools, ranking pairs, kto_tag, images / audios), Axolotl's dataset types (chat_template with tools,
chatml.intel DPO, pre-tokenized), OpenAI's chat fine-tuning format (weight, tool_calls, tools,
image parts) and TRL's dataset formats (language modeling, conversational prompt-completion,
prompt-only, preference explicit / implicit, unpaired preference for KTO, vision).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from engine.data import prepare_dataset, scan_dataset
from engine.errors import DataError
from engine.session.schema import DatasetSection

SHAPES = Path(__file__).resolve().parent / "data" / "shapes"
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tok():
    from engine.models import load_tokenizer

    return load_tokenizer(DEMO_MODEL)


@pytest.fixture(scope="module")
def tool_tok(tok):
    """The demo tokenizer with a chat template that renders tools (Qwen2.5's, as TRL ships it);
    both use <|im_start|> / <|im_end|>, which the demo tokenizer knows."""
    tokenizer = copy.deepcopy(tok)  # load_tokenizer is cached: never change the shared one
    tokenizer.chat_template = (SHAPES / "qwen2_5_tools.jinja").read_text()
    return tokenizer


def refusal(path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        scan_dataset(str(path), **kwargs)
    return one_sentence(err.value)


def one_sentence(error: DataError) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    assert "skip_invalid_rows" not in message, message  # the whole file is of another kind: skipping is no fix
    return message


def prepare(tokenizer, name, **fields):
    fields.setdefault("eval_fraction", 0.0)
    return prepare_dataset(DatasetSection(path=str(SHAPES / name), **fields), tokenizer, 1024)


def first_row(name) -> dict:
    text = (SHAPES / name).read_text()
    return json.loads(text)[0] if name.endswith(".json") else json.loads(text.splitlines()[0])


def answer(value) -> str:
    """The answer text in a chosen / rejected value: text, a turn, or the last turn of a list."""
    if isinstance(value, list):
        value = value[-1]
    if isinstance(value, dict):
        return value.get("value", value.get("content"))
    return value.strip()


# -- supervised shapes train as before -----------------------------------------------------------
@pytest.mark.parametrize("name, fmt", [
    ("llamafactory_alpaca.json", "instruction"),
    ("openai_chat.jsonl", "messages"),
    ("trl_language_modeling.jsonl", "text"),
    ("trl_prompt_completion_conversational.jsonl", "prompt_completion"),
])
def test_supervised_files_are_said_to_be_supervised(name, fmt):
    scan = scan_dataset(str(SHAPES / name))
    assert (scan.format, scan.shape, scan.shape_description) == (fmt, "supervised", "supervised fine-tuning data")


def test_conversational_prompt_completion_trains_the_completion_through_the_chat_template(tok):
    report = prepare(tok, "trl_prompt_completion_conversational.jsonl").report
    assert report.template == "chat"
    example = report.examples[0]
    assert example.text == tok.apply_chat_template(
        [{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "It is blue."}],
        tokenize=False)
    assert example.trained_text == "It is blue.<|im_end|>\n"


def test_openai_weight_zero_leaves_that_answer_untrained(tok):
    example = prepare(tok, "openai_chat.jsonl").report.examples[0]
    assert example.trained_text == "Paris, as if everyone doesn't know that already.<|im_end|>\n"
    assert "<|im_start|>assistant\nParis<|im_end|>" in example.text  # still in the context


def test_text_format_report_names_no_layout(tok):
    report = prepare(tok, "trl_language_modeling.jsonl").report.format_report()
    assert "template:   no layout (plain text as written); loss on the whole text" in report
    assert "Alpaca" not in report


# -- one conversation per file -------------------------------------------------------------------
@pytest.mark.parametrize("name, fmt, key", [("one_conversation.json", "sharegpt", "conversations"),
                                            ("one_conversation_messages.json", "messages", "messages")])
def test_a_file_holding_one_conversation_is_one_row(tok, name, fmt, key):
    scan = scan_dataset(str(SHAPES / name))
    assert (scan.num_rows, scan.format, scan.shape) == (1, fmt, "supervised")
    assert f"one conversation (a JSON object holding one {key!r} list), read as 1 row" in scan.shape_description
    report = prepare(tok, name).report
    assert report.train_rows == 1
    assert "read as 1 row" in report.format_report()


def test_a_json_list_of_turns_is_one_conversation(tmp_path):
    path = tmp_path / "turns.json"
    path.write_text(json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]))
    scan = scan_dataset(str(path))
    assert (scan.num_rows, scan.format) == (1, "messages")  # not two rows of "text" taken from `content`
    assert "one conversation (the file is a list of 2 turns)" in scan.shape_description


# -- preference pairs: named, with the SFT-on-chosen alternative -----------------------------------
PREFERENCE = [
    ("llamafactory_alpaca_ranking.json", "a shared prompt in 'instruction'", {"response": "chosen"}),
    ("llamafactory_sharegpt_ranking.json", "a shared prompt in 'conversations'", {"prompt": "conversations", "completion": "chosen"}),
    ("axolotl_dpo_chatml_intel.jsonl", "a shared prompt in 'question'", {"response": "chosen"}),
    ("trl_preference_explicit.jsonl", "a shared prompt in 'prompt'", {"response": "chosen"}),
    ("trl_preference_implicit.jsonl", "each holding the whole exchange with its prompt", {"text": "chosen"}),
    ("trl_preference_conversational.jsonl", "a shared prompt in 'prompt'", {"prompt": "prompt", "completion": "chosen"}),
    ("trl_preference_implicit_conversational.jsonl", "each holding the whole exchange with its prompt", {"messages": "chosen"}),
]


@pytest.mark.parametrize("name, what, columns", PREFERENCE)
def test_preference_pairs_are_named_with_the_alternatives(name, what, columns):
    message = refusal(SHAPES / name)
    assert message.startswith(f"{SHAPES / name}: preference pairs (")
    assert what in message
    assert "lora-tui trains supervised fine-tuning" in message
    assert f"set dataset.columns to {json.dumps(columns)}" in message
    assert "DPOTrainer" in message


@pytest.mark.parametrize("name, what, columns", PREFERENCE)
def test_mapping_chosen_trains_the_preferred_answers_and_says_so(tok, name, what, columns):
    row = first_row(name)
    report = prepare(tok, name, columns=columns).report
    assert report.shape == "preference"
    assert report.shape_description.endswith(
        "trained as supervised fine-tuning on 'chosen' as dataset.columns maps it; 'rejected' is not used")
    assert "trained as supervised fine-tuning on 'chosen'" in report.format_report()
    example = report.examples[0]
    assert answer(row["chosen"]) in example.trained_text
    assert answer(row["rejected"]) not in example.text


# -- KTO: named; the desirable rows alone are supervised data ------------------------------------
@pytest.mark.parametrize("name, counts", [("llamafactory_kto.json", "1 of 3 are false"),
                                          ("trl_kto.jsonl", "1 of 2 are false")])
def test_kto_data_is_named_with_the_filter_alternative(name, counts):
    message = refusal(SHAPES / name)
    assert message.startswith(f"{SHAPES / name}: KTO data (a boolean 'label' marks each answer desirable or not; {counts})")
    assert "lora-tui trains supervised fine-tuning, which would teach the undesirable answers too" in message
    assert "keep only the rows whose 'label' is true" in message and "KTOTrainer" in message


def test_kto_rows_filtered_by_label_train(tmp_path, tok):
    rows = [row for row in json.loads((SHAPES / "llamafactory_kto.json").read_text()) if row["label"]]
    path = tmp_path / "desirable.json"
    path.write_text(json.dumps(rows))
    data = prepare_dataset(DatasetSection(path=str(path), eval_fraction=0.0), tok, 512)
    assert data.report.format == "messages" and data.report.train_rows == 2
    assert "every 'label' is true" in data.report.shape_description


def test_a_boolean_label_on_plain_text_is_not_kto(tmp_path):
    path = tmp_path / "sentiment.jsonl"
    path.write_text('{"text": "great film", "label": true}\n{"text": "dull film", "label": false}\n')
    assert scan_dataset(str(path)).shape == "supervised"


# -- multimodal, pre-tokenized, prompt-only: refused by name ---------------------------------------
@pytest.mark.parametrize("name, what", [
    ("llamafactory_mllm.json", "multimodal data (the 'images' column; <image> placeholders in 'messages')"),
    ("llamafactory_audio.json", "multimodal data (the 'audios' column; <audio> placeholders in 'messages')"),
    ("openai_vision.jsonl", "multimodal data (image or audio parts in the turns of 'messages')"),
    ("trl_vision.jsonl", "multimodal data (the 'images' column; image or audio parts in the turns of 'prompt')"),
])
def test_multimodal_data_is_refused_for_text_models(name, what):
    message = refusal(SHAPES / name)
    assert message.startswith(f"{SHAPES / name}: {what}, and lora-tui fine-tunes text-only models")


def test_placeholder_without_media_column_is_still_multimodal(tmp_path):
    path = tmp_path / "image_tags.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "A dog."}]}\n')
    assert "multimodal data (<image> placeholders in 'messages')" in refusal(path)


def test_pretokenized_rows_are_refused(tmp_path):
    message = refusal(SHAPES / "axolotl_pretokenized.jsonl")
    assert "pre-tokenized rows (token ids in 'input_ids' and no text beside them)" in message
    assert "the model's own tokenizer" in message


def test_pretokenized_rows_with_their_text_train_on_the_text(tmp_path):
    path = tmp_path / "tokenized.jsonl"
    path.write_text('{"text": "The sky is blue.", "input_ids": [504, 6147, 314]}\n')
    scan = scan_dataset(str(path))
    assert scan.format == "text"
    assert "the token ids in 'input_ids' are ignored" in scan.shape_description


def test_prompt_only_data_is_refused():
    message = refusal(SHAPES / "trl_prompt_only.jsonl")
    assert message.startswith(f"{SHAPES / 'trl_prompt_only.jsonl'}: prompt-only data (a 'prompt' column and no answers to learn)")
    assert "GRPOTrainer" in message


# -- tool calling: through the model's chat template and its tools ---------------------------------
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}
TOOL_FILES = {
    "llamafactory_sharegpt_tools.json": ("sharegpt", "ShareGPT function_call / observation turns, a 'tools' column"),
    "openai_tools.jsonl": ("messages", "OpenAI role tool and tool_calls, a 'tools' column"),
    "axolotl_chat_template_tools.jsonl": ("messages", "OpenAI role tool and tool_calls, a 'tools' column"),
}


@pytest.mark.parametrize("name", TOOL_FILES)
def test_tool_calling_conversations_are_recognised(name):
    fmt, what = TOOL_FILES[name]
    scan = scan_dataset(str(SHAPES / name))
    assert (scan.format, scan.shape) == (fmt, "tool_calling")
    assert scan.shape_description == f"tool-calling conversations ({what})"


@pytest.mark.parametrize("name", TOOL_FILES)
def test_a_template_without_tool_support_says_so(tok, name):
    with pytest.raises(DataError) as err:
        prepare(tok, name)
    message = one_sentence(err.value)
    assert message.startswith(f"{SHAPES / name}: tool-calling conversations (")
    assert "this model's chat template has no tool support (it never mentions tools)" in message


def test_sharegpt_function_calls_render_with_the_tools(tool_tok):
    data = prepare(tool_tok, "llamafactory_sharegpt_tools.json")
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": '{"temperature_c": 18, "sky": "cloudy"}'},
        {"role": "assistant", "content": "It is 18 °C and cloudy in Paris."},
    ]
    example = data.report.examples[0]
    assert example.text == tool_tok.apply_chat_template(messages, tools=[WEATHER], tokenize=False)
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in example.text
    trained = [text for text, on in example.segments if on]
    assert trained == ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n',
                       "It is 18 °C and cloudy in Paris.<|im_end|>\n"]
    assert "<tool_response>" not in example.trained_text  # the tool's answer is context, not learned
    row = data.train[0]
    assert tool_tok.decode([t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]) == "".join(trained)
    report = data.report.format_report()
    assert "rendered with the tools support of the model's chat template" in report
    assert "warning:" not in report  # the template's own <tool_call> markers are no placeholders


def test_openai_tool_calls_render_with_arguments_as_objects(tool_tok):
    example = prepare(tool_tok, "openai_tools.jsonl").report.examples[0]
    row = first_row("openai_tools.jsonl")
    call = row["messages"][1]["tool_calls"][0]
    expected = [row["messages"][0],
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "id": "call_id", "function": {
                        "name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}}]},
                row["messages"][2], row["messages"][3]]
    assert example.text == tool_tok.apply_chat_template(expected, tools=row["tools"], tokenize=False)
    assert ('<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "San Francisco, USA", '
            '"format": "celsius"}}\n</tool_call>') in example.trained_text


def test_axolotl_tool_conversation_trains_the_call_and_the_answer(tool_tok):
    example = prepare(tool_tok, "axolotl_chat_template_tools.jsonl").report.examples[0]
    assert example.trained_text == ('<tool_call>\n{"name": "multiply", "arguments": {"a": 5, "b": 5}}\n</tool_call><|im_end|>\n'
                                    "5 times 5 is 25.<|im_end|>\n")


# -- placeholders in the trained part: a warning, not an error ----------------------------------------
def test_unfilled_placeholders_are_warned_about_with_a_count_and_an_example(tok):
    report = prepare(tok, "placeholders.jsonl").report
    assert report.warnings == [
        "2 of 3 rows have what look like unfilled placeholders in the trained part (3 in all), e.g. '{{name}}' in "
        f"{SHAPES / 'placeholders.jsonl'}, line 1; they would be learned as literal text: fill them in, or drop those rows."
    ]
    assert "  warning:    2 of 3 rows have what look like unfilled placeholders" in report.format_report()
    assert report.train_rows == 3  # trained anyway: the person decides


def test_known_tokens_markup_and_code_are_not_placeholders(tmp_path, tok):
    path = tmp_path / "clean.jsonl"
    rows = [{"instruction": "a", "output": "Use std::vector<int> here."},
            {"instruction": "b", "output": "<think>First this.</think> Then that.<br>Done."},
            {"instruction": "c", "output": "x < y and y > z"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = prepare_dataset(DatasetSection(path=str(path), eval_fraction=0.0), tok, 512).report
    assert report.warnings == []


def test_placeholders_in_the_prompt_alone_are_not_trained_so_not_warned(tmp_path, tok):
    path = tmp_path / "prompt_only_placeholder.jsonl"
    path.write_text('{"instruction": "Write to {{name}}.", "output": "Dear Ann, hello."}\n')
    assert prepare_dataset(DatasetSection(path=str(path), eval_fraction=0.0), tok, 512).report.warnings == []


# -- the whole file of another kind: no advice to skip rows ----------------------------------------
def test_every_row_invalid_is_not_met_with_skipping(tmp_path):
    path = tmp_path / "narrators.jsonl"
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "narrator", "value": "x"}]}
    path.write_text((json.dumps(row) + "\n") * 3)
    message = refusal(path)
    assert "none of the first 3 rows fits either" in message and "check dataset.format and dataset.columns" in message
