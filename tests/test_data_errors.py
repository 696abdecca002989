"""Every bad dataset in the issue fails with one sentence that names the file, line/row or column."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data import scan_dataset
from engine.errors import DataError

DATA = Path(__file__).resolve().parent / "data"


def refusal(name: str, **kwargs) -> str:
    path = name if name.startswith("/") else str(DATA / name)
    with pytest.raises(DataError) as err:
        scan_dataset(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert err.value.exit_code == 2
    return message


def test_malformed_jsonl_line_names_file_and_line():
    message = refusal("bad_json_line.jsonl")
    assert message.startswith(f"{DATA / 'bad_json_line.jsonl'}, line 3: not valid JSON")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"text": "a"}\n\n[1, 2]\n')
    assert refusal(str(path)).startswith(f"{path}, line 3: a JSON list, not an object")


def test_empty_file():
    assert "the file is empty" in refusal("empty.jsonl")


def test_whitespace_only_file(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n")
    assert "the file is empty" in refusal(str(path))


def test_empty_json_list(tmp_path):
    path = tmp_path / "none.json"
    path.write_text("[]")
    assert "the JSON list is empty" in refusal(str(path))


def test_missing_file():
    message = refusal("no_such_file.jsonl")
    assert "no_such_file.jsonl: no such file or folder" in message


def test_mapped_column_that_does_not_exist_is_named_with_the_real_columns():
    message = refusal("alpaca.jsonl", columns={"response": "answer"})
    assert "column 'answer' (mapped to 'response') does not exist" in message
    assert "the columns are 'instruction', 'input', 'output'" in message


def test_null_value_in_mapped_column_names_the_row_and_offers_to_skip():
    message = refusal("null_output.jsonl")
    assert message.startswith(f"{DATA / 'null_output.jsonl'}, line 2: column 'output' is null, not text")
    assert "dataset.skip_invalid_rows: true" in message


def test_non_string_value_in_mapped_column(tmp_path):
    path = tmp_path / "number.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 42}\n')
    assert refusal(str(path)).startswith(f"{path}, line 2: column 'output' is a number, not text")


def test_skipping_invalid_rows_counts_them():
    result = scan_dataset(str(DATA / "null_output.jsonl"), skip_invalid_rows=True)
    assert result.num_rows == 5
    assert result.skipped_rows == 2  # line 2 (null) and line 4 (number); line 5's null input means "no input"
    assert result.skip_reasons[1].endswith("line 4: column 'output' is a number, not text")


def test_conversation_without_assistant_turn():
    message = refusal("no_assistant.json")
    assert message.startswith(f"{DATA / 'no_assistant.json'}, row 2: the conversation in column 'conversations' has no assistant turn")
    result = scan_dataset(str(DATA / "no_assistant.json"), skip_invalid_rows=True)
    assert result.skipped_rows == 1


def test_unknown_speaker_in_sharegpt(tmp_path):
    path = tmp_path / "speaker.json"
    path.write_text('[{"conversations": [{"from": "human", "value": "hi"}, {"from": "narrator", "value": "x"}]}]')
    message = refusal(str(path))
    assert "row 1: turn 2 of column 'conversations' has from 'narrator'" in message


def test_all_rows_invalid_even_when_skipping(tmp_path):
    path = tmp_path / "nulls.jsonl"
    path.write_text('{"text": null}\n{"text": null}\n')
    message = refusal(str(path), format="text", skip_invalid_rows=True)
    assert "all 2 rows were skipped" in message


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("strings_as_conversations.jsonl", {"format": "sharegpt"},
         "format sharegpt expects column 'conversations' to hold lists of turns with from/value keys, but it holds a string"),
        ("messages.jsonl", {"format": "sharegpt"}, "which is the messages format, not sharegpt; set dataset.format to messages"),
        ("sharegpt_system.json", {"format": "messages"}, "which is the sharegpt format, not messages; set dataset.format to sharegpt"),
        ("messages.jsonl", {"format": "instruction"}, "the file looks like the messages format"),
        ("alpaca.jsonl", {"format": "sharegpt"}, "the file looks like the instruction format"),
        ("not_parquet.parquet", {}, "not a Parquet file"),
        ("not_json.json", {}, "not valid JSON (Expecting value at line 1, column 1)"),
        ("one_object.json", {}, "the JSON holds one object, not a list of rows"),
    ],
)
def test_file_that_is_not_the_format_it_claims(name, kwargs, expected):
    assert expected in refusal(name, **kwargs)


def test_conversation_column_of_objects_claimed_as_text(tmp_path):
    message = refusal("messages.jsonl", format="text", columns={"text": "messages"})
    assert "format text expects text in column 'messages'" in message


def test_csv_header_without_rows():
    assert "has a header but no rows" in refusal("header_only.csv")


def test_csv_row_with_missing_fields_names_its_line():
    assert f"{DATA / 'bad_fields.csv'}, line 3: 2 fields where the header has 3" in refusal("bad_fields.csv")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    assert "not UTF-8 text" in refusal(str(path))


def test_unsupported_suffix_and_plain_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "files ending in '.txt' are not read" in refusal(str(tmp_path / "notes.txt"))
    assert "not one saved by datasets.save_to_disk" in refusal(str(tmp_path))


def test_role_that_the_format_does_not_have():
    assert "format instruction has no role 'prompt'" in refusal("alpaca.jsonl", format="instruction", columns={"prompt": "instruction"})
