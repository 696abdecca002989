"""scan_dataset: every source and format from the fixture files, detected and mapped, no tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data import scan_dataset
from engine.errors import DataError

DATA = Path(__file__).resolve().parent / "data"
ALPACA_COLUMNS = {"instruction": "instruction", "input": "input", "response": "output"}


def scan(name: str, **kwargs):
    return scan_dataset(str(DATA / name), **kwargs)


@pytest.mark.parametrize(
    "name, source, rows",
    [
        ("alpaca.jsonl", "jsonl", 4),
        ("alpaca_list.json", "json", 2),
        ("wrapped.json", "json", 3),
        ("alpaca.tsv", "tsv", 2),
        ("bom_quoted.csv", "csv", 2),
        ("alpaca.parquet", "parquet", 3),
        ("alpaca_saved", "arrow-folder", 3),
    ],
)
def test_every_source_loads_alpaca_rows(name, source, rows):
    result = scan(name)
    assert result.source == source
    assert result.num_rows == rows
    assert result.format == "instruction"
    assert result.format_origin == "detected"
    assert result.columns == ALPACA_COLUMNS
    assert result.skipped_rows == 0
    assert set(result.sample_rows[0]) == {"instruction", "input", "output"}


def test_csv_keeps_quoted_newlines_and_drops_the_bom():
    result = scan("bom_quoted.csv")
    assert result.column_names == ["instruction", "input", "output"]  # no "\ufeffinstruction"
    first, second = result.sample_rows
    # Windows line ends inside a quoted cell come through as plain "\n", as the model should see them.
    assert first["output"] == "Soft rain on the roof,\nthe garden drinks slowly,\nclouds go quiet now."
    assert first["input"] == ""
    assert second["instruction"] == 'Quote this, please: "hi"'


def test_json_object_holding_a_list_uses_the_list():
    result = scan("wrapped.json")
    assert result.sample_rows[2] == {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}


def test_dolly_maps_context_to_input_and_response():
    result = scan("dolly.jsonl")
    assert result.format == "instruction"
    assert result.columns == {"instruction": "instruction", "input": "context", "response": "response"}
    assert "category" in result.column_names


@pytest.mark.parametrize(
    "name, fmt, columns",
    [
        ("prompt_completion.jsonl", "prompt_completion", {"prompt": "prompt", "completion": "completion"}),
        ("sharegpt_system.json", "sharegpt", {"conversations": "conversations"}),
        ("messages.jsonl", "messages", {"messages": "messages"}),
        ("messages.parquet", "messages", {"messages": "messages"}),
        ("text.jsonl", "text", {"text": "text"}),
    ],
)
def test_formats_are_detected(name, fmt, columns):
    result = scan(name)
    assert result.format == fmt
    assert result.columns == columns


def test_datasetdict_folder_uses_its_train_split():
    result = scan("messages_saved_dict")
    assert result.source == "arrow-folder"
    assert result.format == "messages"
    assert result.num_rows == 2


def test_columns_override_detection():
    # The person trains on the input as the instruction and ignores the input role.
    result = scan("alpaca.jsonl", columns={"instruction": "input", "input": None})
    assert result.format == "instruction"
    assert result.format_origin == "from dataset.columns"
    assert result.columns == {"instruction": "input", "input": None, "response": "output"}


def test_format_is_inferred_from_the_roles_named_in_columns():
    result = scan("alpaca.jsonl", columns={"text": "output"})
    assert result.format == "text"
    assert result.columns == {"text": "output"}


def test_given_format_maps_columns_for_that_format():
    result = scan("dolly.jsonl", format="text", columns={"text": "response"})
    assert result.format == "text"
    assert result.format_origin == "given"


def test_undetectable_columns_ask_for_format_and_columns(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"q": "a", "a": "b"}\n')
    with pytest.raises(DataError) as err:
        scan_dataset(str(path))
    message = str(err.value)
    assert "cannot tell the format" in message and "'q', 'a'" in message and "dataset.format" in message


def test_null_input_counts_as_no_input():
    # Alpaca files write a missing input as null as often as "".
    assert scan("alpaca.parquet").skipped_rows == 0


def test_jsonl_that_is_really_a_json_list_is_read(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text((DATA / "alpaca_list.json").read_text())
    assert scan_dataset(str(path)).num_rows == 2


def test_json_file_holding_jsonl_is_read(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text((DATA / "alpaca.jsonl").read_text())
    assert scan_dataset(str(path)).num_rows == 4


def test_hub_id_without_network_fails_in_one_sentence(monkeypatch):
    # No hub is reachable here; the id must not be mistaken for a missing local file.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # huggingface_hub and datasets read HF_HUB_OFFLINE once, when first imported (earlier tests in the
    # session import them), and online they retry the hub for 1+2+4+8+8 s before giving up: set the
    # flags the variable becomes, so offline mode holds here too and the load fails at once.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as err:
        scan_dataset("hf://datasets/nobody-xyz/no-such-dataset")
    message = str(err.value)
    assert "cannot load hub dataset 'nobody-xyz/no-such-dataset'" in message
    assert "\n" not in message


def test_importing_engine_data_stays_light():
    # The wizard imports engine.data at start-up; datasets, pyarrow and transformers load on first use.
    import subprocess
    import sys

    code = ("import sys, engine.data; heavy = [m for m in ('datasets', 'pyarrow', 'transformers', 'torch') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=DATA.parent.parent, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_hub_ids_are_told_apart_from_paths(tmp_path):
    from engine.data.load import hub_id_of

    assert hub_id_of("hf://datasets/tatsu-lab/alpaca") == "tatsu-lab/alpaca"
    assert hub_id_of("tatsu-lab/alpaca") == "tatsu-lab/alpaca"
    assert hub_id_of(str(DATA / "alpaca.jsonl")) is None
    assert hub_id_of("data/train.jsonl") is None  # a missing file is reported as missing, not looked up on the hub


def test_prompt_and_response_columns_are_instruction_data(tmp_path):
    path = tmp_path / "pr.jsonl"
    path.write_text('{"prompt": "Say hi.", "response": "Hi!"}\n')
    result = scan_dataset(str(path))
    assert result.format == "instruction"
    assert result.columns == {"instruction": "prompt", "input": None, "response": "response"}
