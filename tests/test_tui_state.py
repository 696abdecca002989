"""The wizard's memory (engine/wizard_state.py: autosave) and its session edits
(engine/session_edits.py: presets, field checks, portable paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import SessionError, UserError
from engine.session.draft import (
    STEPS,
    WizardDraft,
    forget_draft,
    fresh_session_data,
    last_session_path,
    load_draft,
    new_session,
    save_draft,
)
from engine.session.edits import apply_preset, load_presets, matching_preset, parse_field, session_for_file
from engine.session.schema import load_session

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


def test_presets_are_the_seed_recipe_and_validate():
    presets = load_presets()
    assert set(presets) == {"conservative", "higher_capacity"}
    session = new_session(dataset=str(DEMO_DATA))
    conservative = apply_preset(session, presets["conservative"])
    assert (conservative.lora.r, conservative.lora.lora_alpha, conservative.training.learning_rate) == (16, 32, 2e-4)
    higher = apply_preset(session, presets["higher_capacity"])
    assert (higher.lora.r, higher.lora.lora_alpha, higher.training.learning_rate) == (64, 128, 1e-4)
    assert matching_preset(higher, presets) == "higher_capacity"
    assert matching_preset(higher.model_copy(update={"seed": 1}), presets) == "higher_capacity"


def test_a_broken_preset_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "presets.json"
    bad.write_text(json.dumps({"wild": {"lora": {"r": 0}}}))
    with pytest.raises(UserError, match="preset wild"):
        load_presets(bad)


@pytest.mark.parametrize(
    "section, name, text, expected",
    [
        ("training", "learning_rate", "2e-4", 2e-4),
        ("training", "num_train_epochs", "3", 3),
        ("training", "eval_steps", "", None),
        ("training", "gradient_checkpointing", "unsloth", "unsloth"),
        ("training", "gradient_checkpointing", "false", False),
        ("lora", "r", " 32 ", 32),
        ("lora", "lora_dropout", "0.1", 0.1),
    ],
)
def test_parse_field_reads_what_people_type(section, name, text, expected):
    assert parse_field(section, name, text) == expected


@pytest.mark.parametrize(
    "section, name, text, message",
    [
        ("training", "learning_rate", "3", "less than 1"),
        ("training", "learning_rate", "fast", "valid number"),
        ("lora", "r", "0", "greater than 0"),
        ("lora", "r", "16.5", "integer"),
        ("training", "optim", "adam", "'adamw_8bit'"),
        ("training", "per_device_train_batch_size", "", "valid integer"),
    ],
)
def test_parse_field_says_what_would_be_right(section, name, text, message):
    with pytest.raises(ValueError, match=message):
        parse_field(section, name, text)


def test_draft_round_trip_is_a_replayable_session(state_dir):
    session = new_session(dataset=str(DEMO_DATA))
    draft = WizardDraft(session, step="method", plan_gpu="RTX 4090")
    path = save_draft(draft)
    assert path == last_session_path() == state_dir / "last_session.json"
    # The file itself is a valid session (absolute paths), so --replay and --session read it.
    assert load_session(path).dataset.path == str(DEMO_DATA)
    again = load_draft()
    assert again is not None
    assert (again.step, again.plan_gpu, again.plan_vram_gb) == ("method", "RTX 4090", None)
    assert again.session == session.resolved(Path.cwd())
    assert again.session.output.dir == str(Path.cwd() / "runs" / "run")  # not inside the state folder
    assert "extract_contacts.jsonl" in again.describe() and "Method" in again.describe()
    forget_draft()
    assert load_draft() is None


def test_a_draft_without_dataset_keeps_it_empty(state_dir):
    save_draft(WizardDraft(new_session(), step="model"))
    draft = load_draft()
    assert draft.session.dataset.path == ""
    assert draft.describe().startswith("HuggingFaceTB/SmolLM2-135M-Instruct, at Model")


def test_a_damaged_draft_is_ignored_not_fatal(state_dir):
    state_dir.mkdir(parents=True)
    (state_dir / "last_session.json").write_text("{not json")
    assert load_draft() is None
    (state_dir / "last_session.json").write_text(json.dumps({"dataset": {"path": ""}, "wat": 1}))
    assert load_draft() is None


def test_a_draft_given_as_data_is_validated_when_first_read(state_dir):
    draft = WizardDraft(fresh_session_data(dataset=str(DEMO_DATA)))
    assert not draft.validated
    assert draft.session.dataset.path == str(DEMO_DATA) and draft.session.lora.r == 16
    assert draft.validated
    save_draft(WizardDraft(new_session(), step="model"))
    data = json.loads(last_session_path().read_text())
    data["lora"]["r"] = 0
    last_session_path().write_text(json.dumps(data))
    assert load_draft() is None  # validated: refused
    unchecked = load_draft(validate=False)  # what the wizard reads before its first frame
    assert unchecked is not None and unchecked.step == "model"
    with pytest.raises(SessionError, match=r"last_session\.json: lora\.r"):
        _ = unchecked.session


def test_unknown_step_in_position_file_falls_back_to_the_first(state_dir):
    save_draft(WizardDraft(new_session(), step="review"))
    (state_dir / "wizard.json").write_text(json.dumps({"step": "nonsense"}))
    assert load_draft().step == STEPS[0]


def test_session_for_file_makes_inner_paths_relative(tmp_path):
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text(DEMO_DATA.read_text())
    session = new_session(dataset=str(data))
    session = session.model_copy(update={"output": session.output.model_copy(update={"dir": str(tmp_path / "runs" / "a")})})
    written = session_for_file(session, tmp_path / "s.json")
    assert written.dataset.path == "data/train.jsonl"
    assert written.output.dir == "runs/a"
    # and loading it back resolves against the file's folder: the same absolute paths.
    (tmp_path / "s.json").write_text(written.to_json())
    assert load_session(tmp_path / "s.json").dataset.path == str(data)
    elsewhere = session_for_file(session, tmp_path / "sub" / "s.json")
    assert elsewhere.dataset.path == str(data)
