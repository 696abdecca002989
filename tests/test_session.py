"""The session schema: defaults from the seed recipe, strictness, paths, atomic saves."""

import json

import pytest

from engine.errors import SessionError
from engine.session.schema import Session, load_session, save_session, session_from_dict
from tests.conftest import run_cli


def test_defaults_are_the_seed_recipe():
    s = session_from_dict({"dataset": {"path": "d.jsonl"}})
    assert (s.lora.r, s.lora.lora_alpha, s.lora.lora_dropout) == (16, 32, 0.05)
    t = s.training
    assert (t.learning_rate, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (2e-4, 4, 4)
    assert (t.num_train_epochs, t.warmup_ratio, t.weight_decay, t.optim) == (1, 0.03, 0.001, "adamw_8bit")
    assert t.gradient_checkpointing == "unsloth"
    assert s.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"dataset": {"path": "d"}, "training": {"lerning_rate": 1e-4}},
         "training.lerning_rate is not a known field (did you mean 'learning_rate'?)"),
        ({"dataset": {"path": "d"}, "lora": {"r": "16"}}, "lora.r"),
        ({"dataset": {"path": "d"}, "method": "dora"}, "method"),
        ({"model": {"name": "x"}}, "dataset is required"),
        ({"dataset": {"path": "d"}, "version": 7}, "version 7 is not supported"),
        ({"dataset": {"path": "d", "columns": {"answer": "x"}}}, "unknown role 'answer'"),
        ({"dataset": {"path": "d", "eval_fraction": 0}, "training": {"eval_steps": 5}}, "eval_fraction is 0"),
        # a Union field: the field's name, not pydantic's member tag ("training.report_to.literal[...]")
        ({"dataset": {"path": "d"}, "training": {"report_to": "tensorbord"}}, "s.json: training.report_to input should be"),
        ({"dataset": {"path": "d"}, "training": {"logging_steps": "x"}}, "s.json: training.logging_steps input should be"),
        ({"dataset": {"path": "d"}, "training": {"gradient_checkpointing": "x"}},
         "s.json: training.gradient_checkpointing input should be"),
    ],
)
def test_bad_sessions_name_the_field(data, expected):
    with pytest.raises(SessionError) as err:
        session_from_dict(data, where="s.json")
    message = str(err.value)
    assert expected in message
    assert message.startswith("s.json") and "\n" not in message


def test_relative_paths_resolve_against_the_session_file(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "session.json").write_text(json.dumps({"dataset": {"path": "data/train.jsonl"}, "output": {"dir": "runs/a"}}))
    s = load_session(folder / "session.json")
    assert s.dataset.path == str(folder / "data" / "train.jsonl")
    assert s.output.dir == str(folder / "runs" / "a")
    assert s.model.name == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id is not a path


def test_a_hub_dataset_id_is_not_made_a_path(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"dataset": {"path": "tatsu-lab/alpaca"}}))
    assert load_session(tmp_path / "s.json").dataset.path == "tatsu-lab/alpaca"
    (tmp_path / "data").mkdir()
    (tmp_path / "s.json").write_text(json.dumps({"dataset": {"path": "data/train.jsonl"}}))
    assert load_session(tmp_path / "s.json").dataset.path == str(tmp_path / "data" / "train.jsonl")


def test_save_is_atomic_and_round_trips(tmp_path):
    s = session_from_dict({"dataset": {"path": "d.jsonl"}, "method": "qlora"})
    path = save_session(s, tmp_path / "deep" / "s.json")
    assert Session.model_validate_json(path.read_text()) == s
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"dataset": {"path": "d"}, "training": {"batch": 4}}', "training.batch is not a known field"),
        ('{"dataset": {"path": "d"}, "lora": {"r": 1.5}}', "lora.r"),
        ('{"dataset": ', "not valid JSON at line 1"),
        ('{"dataset": {"path": "missing.jsonl"}}', "missing.jsonl"),
    ],
)
def test_bad_session_on_the_command_line_is_one_line_and_exit_2(tmp_path, content, expected):
    path = tmp_path / "s.json"
    path.write_text(content)
    result = run_cli("--replay", str(path), timeout=120)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists()  # nothing written for a session that cannot run


def test_missing_session_file(tmp_path):
    result = run_cli("--replay", str(tmp_path / "nope.json"), timeout=60)
    assert result.returncode == 2 and "no such session file" in result.stderr


def test_with_changes_is_the_one_validated_way_to_edit():
    session = session_from_dict({"dataset": {"path": "d.jsonl"}})
    edited = session.with_changes({"lora.r": 8, "method": "qlora", "training": {"learning_rate": 1e-4}})
    assert (edited.lora.r, edited.method, edited.training.learning_rate) == (8, "qlora", 1e-4)
    assert edited.lora.lora_alpha == session.lora.lora_alpha  # a section dict changes only what it names
    assert session.lora.r == 16  # a copy: the original stands
    with pytest.raises(SessionError, match=r"remedy 'x': lora\.rank is not a field"):
        session.with_changes({"lora.rank": 8}, where="remedy 'x'")
    with pytest.raises(SessionError, match=r"lora\.r"):
        session.with_changes({"lora.r": 0})
    with pytest.raises(SessionError, match="eval_fraction"):  # cross-field rules run too
        session.with_changes({"training.eval_steps": 5, "dataset.eval_fraction": 0})


@pytest.mark.parametrize(
    "name, expected",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True),
        ("Qwen/Qwen2.5-0.5B", True),
        ("tatsu-lab/alpaca", True),
        ("data/train.jsonl", False),  # a file suffix makes it a path, on disk or not
        ("models/model.gguf", False),
        ("./owner/name", False),
        ("/abs/owner", False),
        ("a/b/c", False),
        ("hf://datasets/owner/name", False),
        ("gpt2", False),
    ],
)
def test_one_rule_for_hub_ids(name, expected, tmp_path):
    from engine.models import is_hub_id

    assert is_hub_id(name, tmp_path) is expected


def test_an_existing_folder_is_a_path_not_a_hub_id(tmp_path):
    from engine.models import is_hub_id

    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert is_hub_id("owner/name", tmp_path) is False
    assert is_hub_id("owner/other", tmp_path) is True


def test_distributed_section_defaults_to_one_process_and_old_sessions_load(tmp_path):
    old = session_from_dict({"dataset": {"path": "d.jsonl"}})  # written before the section existed
    d = old.distributed
    assert (d.strategy, d.nproc_per_node, d.nnodes, d.node_rank, d.rdzv_endpoint) == ("auto", 1, 1, 0, None)
    assert "distributed" not in json.loads(old.to_json())  # one process: the file stays as it was
    several = old.with_changes({"distributed": {"nproc_per_node": "auto", "strategy": "fsdp"}})
    path = save_session(several, tmp_path / "s.json")
    written = json.loads(path.read_text())["distributed"]
    assert written == {"strategy": "fsdp", "nproc_per_node": "auto", "nnodes": 1, "node_rank": 0, "rdzv_endpoint": None,
                       "cpu_offload": False}
    assert load_session(path).distributed == several.distributed
    del written["cpu_offload"]  # a section written before FSDP's CPU offload existed: off
    assert session_from_dict({"dataset": {"path": "d.jsonl"}, "distributed": written}).distributed.cpu_offload is False


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"nnodes": 2}, "distributed.rdzv_endpoint is required when nnodes is above 1"),
        ({"nnodes": 2, "rdzv_endpoint": "10.0.0.1"}, "distributed.rdzv_endpoint must be HOST:PORT"),
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:29500"}, "distributed.node_rank must be below nnodes (2)"),
        ({"strategy": "none", "nproc_per_node": 4}, 'distributed.nproc_per_node must be 1 with strategy "none"'),
        ({"nproc_per_node": "2"}, 'distributed.nproc_per_node must be a whole number of processes (1 or more) or "auto"'),
        ({"nproc_per_node": 0}, "distributed.nproc_per_node must be a whole number"),
        ({"strategy": "deepspeed"}, "distributed.strategy"),
        ({"world_size": 2}, "distributed.world_size is not a known field"),
    ],
)
def test_bad_distributed_sections_name_the_field(section, expected):
    with pytest.raises(SessionError) as err:
        session_from_dict({"dataset": {"path": "d"}, "distributed": section}, where="s.json")
    assert expected in str(err.value) and "\n" not in str(err.value)
