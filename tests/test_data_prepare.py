"""prepare_dataset with the demo model's real tokenizer: exact rendered text, loss masks, truncation,
split, token statistics and the plain-text report."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data import prepare_dataset
from engine.errors import DataError
from engine.session.schema import DatasetSection

DATA = Path(__file__).resolve().parent / "data"
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def tok():
    from engine.models import load_tokenizer

    return load_tokenizer(DEMO_MODEL)


def prepare(tok, name, max_seq_length=512, **fields):
    fields.setdefault("eval_fraction", 0.0)
    return prepare_dataset(DatasetSection(path=str(DATA / name), **fields), tok, max_seq_length)


def trained_text(tok, row) -> str:
    return tok.decode([t for t, m in zip(row["input_ids"], row["completion_mask"]) if m], skip_special_tokens=False)


def full_text(tok, row) -> str:
    return tok.decode(row["input_ids"], skip_special_tokens=False)


def test_alpaca_with_input_renders_character_for_character(tok):
    data = prepare(tok, "alpaca.jsonl")
    example = data.report.examples[0]
    assert example.text == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n"
        "\n"
        "### Instruction:\n"
        "Give the opposite of the word.\n"
        "\n"
        "### Input:\n"
        "hot\n"
        "\n"
        "### Response:\n"
        "cold" + tok.eos_token
    )
    assert example.trained_text == "cold" + tok.eos_token
    row = data.train[0]
    assert full_text(tok, row) == example.text
    assert trained_text(tok, row) == "cold" + tok.eos_token
    assert row["input_ids"][-1] == tok.eos_token_id
    assert len(row["input_ids"]) == len(row["completion_mask"])


def test_alpaca_without_input_drops_the_input_block(tok):
    data = prepare(tok, "alpaca.jsonl")
    assert data.report.examples[1].text == (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n"
        "\n"
        "### Instruction:\n"
        "Name a primary colour.\n"
        "\n"
        "### Response:\n"
        "Red." + tok.eos_token
    )
    assert trained_text(tok, data.train[1]) == "Red." + tok.eos_token


def test_prompt_is_tokenized_as_at_inference(tok):
    # The prompt's tokens are exactly what the prompt alone tokenizes to: what generation will see.
    data = prepare(tok, "alpaca.jsonl")
    prompt, response = data.report.examples[2].segments
    ids = tok(prompt[0], add_special_tokens=False)["input_ids"]
    row = data.train[2]
    assert row["input_ids"][: len(ids)] == ids
    assert row["completion_mask"] == [0] * len(ids) + [1] * (len(row["input_ids"]) - len(ids))


def test_dolly_context_is_the_input(tok):
    data = prepare(tok, "dolly.jsonl")
    text = data.report.examples[0].text
    assert "### Instruction:\nWhen did the first person walk on the Moon?\n\n### Input:\nApollo 11 landed" in text
    assert data.report.examples[0].trained_text == "On 20 July 1969." + tok.eos_token
    assert "### Input:" not in data.report.examples[1].text


def test_train_on_everything_marks_every_token(tok):
    data = prepare(tok, "alpaca.jsonl", completion_only_loss=False)
    for row in data.train:
        assert set(row["completion_mask"]) == {1}
    assert "loss on the whole text" in data.report.format_report()


def test_text_format_trains_on_all_of_it(tok):
    data = prepare(tok, "text.jsonl")
    assert data.report.examples[0].segments == [("The quick brown fox jumps over the lazy dog." + tok.eos_token, True)]
    assert set(data.train[0]["completion_mask"]) == {1}


def test_sharegpt_with_system_turn_uses_the_chat_template_and_trains_every_assistant_turn(tok):
    data = prepare(tok, "sharegpt_system.json")
    example = data.report.examples[0]
    assert example.text == (
        "<|im_start|>system\nYou answer in one word.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\nRome.<|im_end|>\n"
    )
    assert [text for text, trained in example.segments if trained] == ["Paris.<|im_end|>\n", "Rome.<|im_end|>\n"]
    assert trained_text(tok, data.train[0]) == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert full_text(tok, data.train[0]) == example.text
    # Without a system turn, the template's own default system prompt is part of what the model sees.
    assert data.report.examples[1].text.startswith(SMOL_SYSTEM)
    assert data.report.template == "chat"


def test_messages_multi_turn(tok):
    data = prepare(tok, "messages.jsonl")
    assert trained_text(tok, data.train[0]) == "Hello.<|im_end|>\nGoodbye.<|im_end|>\n"
    assert data.report.examples[0].text.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    assert trained_text(tok, data.train[1]) == "4<|im_end|>\n"


def test_instruction_data_with_the_chat_template(tok):
    data = prepare(tok, "alpaca.jsonl", template="chat")
    assert data.report.examples[0].text == (
        SMOL_SYSTEM + "<|im_start|>user\nGive the opposite of the word.\n\nhot<|im_end|>\n"
        "<|im_start|>assistant\ncold<|im_end|>\n"
    )
    assert data.report.examples[0].trained_text == "cold<|im_end|>\n"


def test_prompt_completion_with_the_alpaca_layout(tok):
    data = prepare(tok, "prompt_completion.jsonl")
    assert data.report.examples[0].text.endswith("### Instruction:\nThe capital of France is\n\n### Response:\n Paris." + tok.eos_token)
    assert trained_text(tok, data.train[0]) == " Paris." + tok.eos_token


@pytest.mark.parametrize("name", ["alpaca_list.json", "wrapped.json", "bom_quoted.csv", "alpaca.tsv",
                                  "alpaca.parquet", "alpaca_saved", "messages.parquet", "messages_saved_dict"])
def test_every_source_prepares(tok, name):
    data = prepare(tok, name)
    assert data.report.train_rows == len(data.train) >= 2
    assert data.train.column_names == ["input_ids", "completion_mask"]
    assert data.train.cache_files == []  # in memory: nothing on disk a later run could pick up
    for row in data.train:
        assert 1 in row["completion_mask"] and 0 in row["completion_mask"]


def test_csv_quoted_newlines_reach_the_model(tok):
    data = prepare(tok, "bom_quoted.csv")
    assert data.report.examples[0].trained_text == (
        "Soft rain on the roof,\nthe garden drinks slowly,\nclouds go quiet now." + tok.eos_token
    )


def test_truncation_is_counted_and_applied(tok):
    full = prepare(tok, "alpaca.jsonl")
    lengths = [len(row["input_ids"]) for row in full.train]
    limit = max(lengths) - 1  # the longest rows lose their last token (the EOS) and keep the rest
    longer = sum(1 for n in lengths if n > limit)
    data = prepare(tok, "alpaca.jsonl", max_seq_length=limit)
    assert data.report.truncated_rows == longer >= 1
    assert len(data.train) == 4 and data.report.dropped_rows == 0
    assert [len(row["input_ids"]) for row in data.train] == [min(n, limit) for n in lengths]
    assert data.report.token_stats == full.report.token_stats  # measured before the cut
    assert f"{longer} of 4 rows are longer than max_seq_length {limit} and are cut" in data.report.format_report()


def test_rows_with_nothing_left_to_train_are_dropped(tok):
    # 40 tokens hold the Alpaca preamble but never reach a response.
    data = prepare(tok, "alpaca.jsonl", max_seq_length=40)
    assert len(data.train) == 1  # only the row without an input block reaches its response
    assert data.report.dropped_rows == 3
    assert "3 dropped (nothing left to train on after truncation)" in data.report.format_report()


def test_everything_cut_away_is_refused(tok):
    with pytest.raises(DataError, match="beyond max_seq_length 10"):
        prepare(tok, "alpaca.jsonl", max_seq_length=10)


def test_token_stats(tok):
    data = prepare(tok, "alpaca.jsonl")
    lengths = sorted(len(row["input_ids"]) for row in data.train)
    stats = data.report.token_stats
    assert stats["min"] == lengths[0] and stats["max"] == lengths[-1]
    assert stats["median"] == (lengths[1] + lengths[2]) / 2
    assert lengths[2] <= stats["p95"] <= lengths[3]


def test_eval_split_is_deterministic_and_disjoint(tok):
    a = prepare(tok, "alpaca.jsonl", eval_fraction=0.25)
    b = prepare(tok, "alpaca.jsonl", eval_fraction=0.25)
    assert (a.report.train_rows, a.report.eval_rows) == (3, 1)
    assert a.eval["input_ids"] == b.eval["input_ids"]
    assert a.eval[0]["input_ids"] not in a.train["input_ids"]
    assert prepare(tok, "alpaca.jsonl").eval is None


def test_skipped_rows_reach_the_report(tok):
    data = prepare(tok, "null_output.jsonl", skip_invalid_rows=True)
    assert (data.report.num_rows, data.report.skipped_rows, len(data.train)) == (5, 2, 3)
    text = data.report.format_report()
    assert "2 invalid skipped" in text and "line 2: column 'output' is null" in text


def test_format_report_shows_what_a_person_needs(tok):
    data = prepare(tok, "alpaca.jsonl", eval_fraction=0.25)
    text = data.report.format_report()
    for expected in ("format:     instruction (detected)", "instruction <- 'instruction'", "response <- 'output'",
                     "Alpaca layout; loss on the responses only", "4 in the file", "3 train, 1 eval",
                     "tokens/row: min", "Example 1", "### Response:", "▶cold" + tok.eos_token + "◀"):
        assert expected in text, expected
    assert data.report.to_dict()["examples"][0]["text"] == data.report.examples[0].text


def sentencepiece_style_tokenizer():
    """A real tokenizer of the Llama-2 / Mistral kind: a space before every text, BOS added on encode."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [(DATA / "alpaca.jsonl").read_text()] * 5
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_tokenizer_that_prefixes_a_space_is_tokenized_whole_with_bos():
    from engine.data.prepare import _segmentwise_is_lossless

    sp = sentencepiece_style_tokenizer()
    assert not _segmentwise_is_lossless(sp)  # "cold" alone would become "▁cold"
    data = prepare(sp, "alpaca.jsonl")
    example = data.report.examples[1]
    assert example.text.startswith("<s>Below is an instruction that describes a task. Write")
    assert example.trained_text == "Red.</s>"
    row = data.train[1]
    assert row["input_ids"][0] == sp.bos_token_id
    assert row["input_ids"] == sp(example.text[len("<s>"):])["input_ids"]  # exactly the tokenizer's own encoding
    assert sp.decode([t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]) == "Red.</s>"


def test_conversation_ending_on_a_user_turn_keeps_it_untrained(tok, tmp_path):
    path = tmp_path / "tail.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},'
                    ' {"role": "user", "content": "Thanks"}]}\n')
    data = prepare_dataset(DatasetSection(path=str(path), eval_fraction=0.0), tok, 512)
    example = data.report.examples[0]
    assert example.text == SMOL_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n"
    assert example.segments[-1] == ("<|im_start|>user\nThanks<|im_end|>\n", False)
    assert trained_text(tok, data.train[0]) == "Hello.<|im_end|>\n"
