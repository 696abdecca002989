"""`lora-tui --replay s.json --dry-run`: everything a run needs is checked and reported; nothing
is trained and nothing is written to the run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UserError
from tests.conftest import run_cli, small_session, write_session


def dry_run_in_process(tmp_path: Path, session: dict) -> tuple[int, str]:
    """What `lora-tui --replay S --dry-run` does, without the subprocess (torch and transformers
    imported again, 10-15 s): replay() loads the session, runs preflight and prints the report, and
    returns the exit code; a UserError it raises is the CLI's one line on stderr and exit 2 (tui.cli.main).
    The first test below runs the real command line (exit 0, nothing on stderr, no run folder), and
    test_replay_of_a_malformed_dataset_is_one_line_naming_the_line a refusal (exit 2, one line on stderr)."""
    from engine.training.supervisor import replay

    printed: list[str] = []
    code = replay(str(write_session(tmp_path, session)), dry_run=True, out=printed.append)
    return code, "\n".join(printed) + "\n"


def dry_run_refusal(tmp_path: Path, session: dict) -> str:
    """The one sentence a refused dry run prints (as `lora-tui: SENTENCE`, exit 2); nothing else is printed."""
    from engine.training.supervisor import replay

    printed: list[str] = []
    with pytest.raises(UserError) as refused:
        replay(str(write_session(tmp_path, session)), dry_run=True, out=printed.append)
    assert refused.value.exit_code == 2 and printed == []
    return str(refused.value).strip()


def test_dry_run_reports_model_data_and_memory(tmp_path):
    session = small_session(tmp_path, dataset__eval_fraction=0.1)
    result = run_cli("--replay", str(write_session(tmp_path, session)), "--dry-run", timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Architecture: LlamaForCausalLM, 134,515,008 parameters, 30 layers" in out
    assert "LoRA: r 8 on q_proj" in out and "trainable parameters" in out
    assert "format:     instruction (detected)" in out
    assert "split:      360 train, 40 eval" in out
    assert "tokens/row: min" in out and "truncation:" in out
    assert "### Response:\n  │ ▶{\"name\": " in out  # the trained part is marked in the rendered example
    assert "Memory: estimated peak" in out
    assert out.rstrip().endswith("Dry run OK: the session is ready to train.")
    assert not (tmp_path / "run").exists()
    assert result.stderr.strip() == ""  # no library chatter on the person's terminal


def test_dry_run_refuses_a_module_the_model_lacks(tmp_path):
    session = small_session(tmp_path, lora__target_modules=["q_proj", "qkv_proj"])
    message = dry_run_refusal(tmp_path, session)  # exit 2
    assert "qkv_proj" in message and "q_proj, k_proj, v_proj, o_proj" in message
    assert len(message.splitlines()) == 1 and "Traceback" not in message


def test_replay_of_a_malformed_dataset_is_one_line_naming_the_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')
    session = small_session(tmp_path, dataset__path=str(data))
    result = run_cli("--replay", str(write_session(tmp_path, session)), timeout=300)
    assert result.returncode == 2
    assert str(data) in result.stderr and "line 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


SHAPES = Path(__file__).resolve().parent / "data" / "shapes"


def test_dry_run_names_kto_data_in_one_sentence(tmp_path):
    data = SHAPES / "llamafactory_kto.json"
    session = small_session(tmp_path, dataset__path=str(data))
    message = dry_run_refusal(tmp_path, session)  # exit 2, nothing on stdout, so no "Dry run OK"
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"{data}: KTO data (a boolean 'label' marks each answer desirable or not; 1 of 3 are false)" in message
    assert "keep only the rows whose 'label' is true" in message and "skip_invalid_rows" not in message


def test_dry_run_of_tool_calls_says_the_template_has_no_tool_support(tmp_path):
    data = SHAPES / "openai_tools.jsonl"
    session = small_session(tmp_path, dataset__path=str(data))
    message = dry_run_refusal(tmp_path, session)
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"{data}: tool-calling conversations (OpenAI role tool and tool_calls, a 'tools' column)" in message
    assert "this model's chat template has no tool support" in message


def test_dry_run_warns_about_unfilled_placeholders_and_passes(tmp_path):
    session = small_session(tmp_path, dataset__path=str(SHAPES / "placeholders.jsonl"))
    code, stdout = dry_run_in_process(tmp_path, session)
    assert code == 0, stdout
    assert "  data:       supervised fine-tuning data" in stdout
    assert "  warning:    2 of 3 rows have what look like unfilled placeholders in the trained part (3 in all), e.g. '{{name}}'" in stdout
    assert stdout.rstrip().endswith("Dry run OK: the session is ready to train.")
    assert not (tmp_path / "run").exists()
