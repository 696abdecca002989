"""GGUF export (`lora-tui export RUN_DIR --gguf TYPE`): llama.cpp's pinned converter and quantizer, the
check by generating with the GGUF beside the merged model, the Ollama Modelfile, and the tokenizer
repair that keeps llama.cpp from aborting on the demo model's GGUF-converted tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, DEMO_MODEL, events_of, run_cli, small_session, write_session

SENTENCE_MAX = 300


@pytest.fixture(scope="module")
def demo_tokenizer():
    from engine.models import load_tokenizer

    return load_tokenizer(DEMO_MODEL)


def _one_sentence(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(lines[0]) < SENTENCE_MAX
    return lines[0]


# -- bad input: one sentence each -------------------------------------------------------------------

def test_a_bad_gguf_type_is_one_sentence(tmp_path):
    result = run_cli("export", str(tmp_path), "--gguf", "q3_k_s", timeout=120)
    assert result.returncode == 2
    line = _one_sentence(result)
    assert "q3_k_s" in line and "q4_k_m" in line and "f16" in line


def test_an_architecture_llama_cpp_does_not_know_is_one_sentence(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "merged").mkdir(parents=True)
    write_session(run_dir, small_session(tmp_path))
    (run_dir / "merged" / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"],
                                                                "model_type": "no-such"}))
    result = run_cli("export", str(run_dir), "--gguf", "q8_0", timeout=300)
    assert result.returncode == 2
    line = _one_sentence(result)
    assert "NoSuchModelForCausalLM" in line and "does not know this model family" in line
    assert not (run_dir / "gguf").exists()


def test_a_config_that_is_not_a_model_config_and_no_questions_are_one_sentence_each(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "merged").mkdir(parents=True)
    write_session(run_dir, small_session(tmp_path))
    (run_dir / "merged" / "config.json").write_text("[1, 2]")
    result = run_cli("export", str(run_dir), "--gguf", "q8_0", timeout=300)
    assert result.returncode == 2 and "not a model config" in _one_sentence(result)
    result = run_cli("export", str(run_dir), "--check-prompts", "0", timeout=120)
    assert result.returncode == 2 and "--check-prompts 0" in _one_sentence(result)


def test_the_session_takes_output_gguf_and_old_sessions_still_load(tmp_path):
    from engine.errors import SessionError
    from engine.session.schema import load_session

    old = load_session(write_session(tmp_path, small_session(tmp_path), "old.json"))
    assert old.output.gguf is None
    new = load_session(write_session(tmp_path, small_session(tmp_path, output__gguf="q4_k_m"), "new.json"))
    assert new.output.gguf == "q4_k_m"
    with pytest.raises(SessionError, match="output.gguf"):
        load_session(write_session(tmp_path, small_session(tmp_path, output__gguf="q3"), "bad.json"))


# -- the tokenizer trap ---------------------------------------------------------------------------------

def _hybrid_copy(source: Path, target: Path) -> Path:
    """The demo folder's tokenizer files as transformers' GGUF reader saved them before the repair:
    a byte-level BPE with a Llama-style decoder and byte_fallback on."""
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "chat_template.jinja", "generation_config.json"):
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    data = json.loads((target / "tokenizer.json").read_text())
    data["model"]["byte_fallback"], data["model"]["fuse_unk"] = True, True
    data["normalizer"] = {"type": "Sequence", "normalizers": []}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
    (target / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    return target


def test_the_repaired_tokenizer_gives_the_same_ids_and_llama_cpp_reads_it_as_gpt2(tmp_path):
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from engine.export.llama_cpp import converter, converter_env
    from engine.models import repair_byte_level_tokenizer, resolve_model

    folder = _hybrid_copy(Path(resolve_model(DEMO_MODEL).path), tmp_path / "tok")
    before = AutoTokenizer.from_pretrained(folder)
    assert repair_byte_level_tokenizer(folder) is True
    assert repair_byte_level_tokenizer(folder) is False  # once
    after = AutoTokenizer.from_pretrained(folder)
    texts = [line for line in DEMO_DATA.read_text(encoding="utf-8").splitlines()[:200]]
    texts += ["héllo wörld 你好 🎉\n\n\ttabs", "<|im_start|>user\nhi<|im_end|>\n"]
    for text in texts:
        ids = before(text, add_special_tokens=False)["input_ids"]
        assert after(text, add_special_tokens=False)["input_ids"] == ids
        assert after.decode(ids) == before.decode(ids)

    script = converter()
    out = tmp_path / "vocab.gguf"
    subprocess.run([sys.executable, str(script), str(folder), "--vocab-only", "--outfile", str(out)],
                   env=converter_env(script), capture_output=True, check=True, timeout=300)
    import gguf

    fields = gguf.GGUFReader(str(out)).fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"  # was "llama": llama.cpp aborted on tokenize
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"


# -- the Modelfile's template against the project's own renderer ------------------------------------------

def _training_prompt(tokenizer, template: str, instruction: str, input_text: str) -> str:
    from engine.data.templates import Renderer

    segments = Renderer(tokenizer, "instruction", template).render((instruction, input_text, "{}"))
    return "".join(text for text, trained in segments if not trained)


def test_the_chat_template_in_go_syntax_renders_training_prompts_exactly(demo_tokenizer):
    from engine.export.modelfile import chat_go_template, measure_chat_template, render_go_template

    layout = measure_chat_template(demo_tokenizer)
    assert layout.default_system.startswith("You are a helpful AI assistant named SmolLM")
    template = chat_go_template(layout)
    assert "{{-" not in template and "range .Messages" in template
    row = json.loads(DEMO_DATA.read_text(encoding="utf-8").splitlines()[0])
    expected = _training_prompt(demo_tokenizer, "chat", row["instruction"], row["input"])
    # Ollama puts the Modelfile's SYSTEM first in .Messages when the conversation has none.
    messages = [{"Role": "system", "Content": layout.default_system},
                {"Role": "user", "Content": f"{row['instruction']}\n\n{row['input']}"}]
    assert render_go_template(template, {"Messages": messages}) == expected
    # A multi-turn conversation, as the template itself renders it.
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {{ there }}"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again?"}]
    expected = demo_tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    as_go = [{"Role": t["role"], "Content": t["content"]} for t in turns]
    assert render_go_template(template, {"Messages": as_go}) == expected


def test_a_llama3_style_chat_template_with_a_bos_is_measured_too(demo_tokenizer):
    import copy

    from engine.export.modelfile import chat_go_template, measure_chat_template, render_go_template

    tokenizer = copy.deepcopy(demo_tokenizer)
    tokenizer.chat_template = (
        "{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
        " + m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
    layout = measure_chat_template(tokenizer)
    assert layout.head == "<|begin_of_text|>" and layout.default_system == ""
    assert layout.after["user"] == "<|eot_id|>" and layout.before["user"] == "<|start_header_id|>user<|end_header_id|>\n\n"
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    expected = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    as_go = [{"Role": t["role"], "Content": t["content"]} for t in turns]
    assert render_go_template(chat_go_template(layout), {"Messages": as_go}) == expected


def test_the_alpaca_template_in_go_syntax_renders_training_prompts_exactly(demo_tokenizer):
    from engine.export.modelfile import alpaca_go_template, render_go_template

    row = json.loads(DEMO_DATA.read_text(encoding="utf-8").splitlines()[0])
    with_input = render_go_template(alpaca_go_template(row["instruction"]), {"Prompt": row["input"], "Response": ""})
    assert with_input == _training_prompt(demo_tokenizer, "alpaca", row["instruction"], row["input"])
    without = render_go_template(alpaca_go_template(), {"Prompt": "Name a colour.", "Response": ""})
    assert without == _training_prompt(demo_tokenizer, "alpaca", "Name a colour.", "")


def test_the_go_template_renderer_handles_the_subset():
    from engine.export.modelfile import render_go_template

    template = '{{ range .Messages }}{{ if eq .Role "a" }}A:{{ .Content }};{{ else if eq .Role "b" }}B{{ else }}?{{ end }}{{ end }}!'
    messages = [{"Role": "a", "Content": "x"}, {"Role": "b"}, {"Role": "c"}]
    assert render_go_template(template, {"Messages": messages}) == "A:x;B?!"
    assert render_go_template('{{ "{{" }}x', {}) == "{{x"


# -- real exports from a real run ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_run(finished_run, tmp_path_factory) -> Path:
    """The shared finished run with its merged model, copied once for this module's exports."""
    target = tmp_path_factory.mktemp("gguf") / "run"
    shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns("checkpoint-*"))
    return target


@pytest.mark.training
def test_q8_0_export_loads_in_llama_cpp_and_answers_like_the_merged_model(gguf_run):
    # Two of the run's questions (the default asks 3): each costs up to 80 greedy tokens in
    # transformers and in llama.cpp, and two already give some 300 teacher-forced positions.
    result = run_cli("export", str(gguf_run), "--gguf", "q8_0", "--check-prompts", "2", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    path = gguf_run / "gguf" / "run-q8_0.gguf"
    assert path.is_file() and 100 * 2**20 < path.stat().st_size < 200 * 2**20
    report = json.loads((gguf_run / "gguf" / "run-q8_0.check.json").read_text())
    assert report["passed"] and report["tokenization_match"]
    assert report["metadata"]["tokenizer.ggml.model"] == "gpt2"
    assert report["top1_agreement"] >= 0.93 and report["positions"] > 100
    assert report["tokens_per_second"] > 0
    assert all(p["merged"] and p["gguf"] is not None for p in report["prompts"]) and len(report["prompts"]) == 2
    assert "checked" in result.stdout and "ollama create run -f Modelfile" in result.stdout
    modelfile = (gguf_run / "gguf" / "Modelfile").read_text()
    assert [line for line in modelfile.splitlines() if line.startswith("FROM")] == ["FROM ./run-q8_0.gguf"]
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "### Input:" in modelfile
    event = [e for e in events_of(gguf_run) if e["event"] == "gguf"][-1]
    assert event["passed"] and event["path"] == str(path)


@pytest.mark.training
def test_q4_k_m_is_quantized_by_llama_cpp_and_checked(gguf_run):
    from engine.export.gguf import export_gguf

    said = []
    report = export_gguf(gguf_run, "q4_k_m", progress=said.append, check_prompts=2)  # as q8_0 above, from the API
    assert report["passed"], report["reason"]
    assert any("Quantizing to q4_k_m" in line for line in said)
    path = Path(report["path"])
    assert path.name == "run-q4_k_m.gguf" and path.stat().st_size < 120 * 2**20
    assert report["tokenization_match"] and report["top1_agreement"] >= 0.8
    assert report["metadata"]["general.file_type"] in ("15", 15)  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert len(report["prompts"]) == 2


@pytest.mark.training
def test_a_gguf_llama_cpp_cannot_tokenize_is_named_failed(gguf_run, tmp_path, monkeypatch):
    """The trap itself: the tokenizer as saved before the repair. llama.cpp aborts on the first
    tokenize; the check catches it and the file is named failed, not handed over."""
    from engine.export import gguf as export

    run_dir = tmp_path / "run"
    shutil.copytree(gguf_run, run_dir, ignore=shutil.ignore_patterns("gguf"))
    merged = run_dir / "merged"
    _hybrid_copy(merged, tmp_path / "hybrid")
    shutil.copy(tmp_path / "hybrid" / "tokenizer.json", merged / "tokenizer.json")
    monkeypatch.setattr("engine.models.repair_byte_level_tokenizer", lambda folder: False)
    report = export.export_gguf(run_dir, "q8_0", check_prompts=1)
    assert not report["passed"]
    assert report["path"].endswith("run-q8_0.failed.gguf") and not (run_dir / "gguf" / "run-q8_0.gguf").exists()
    assert "llama.cpp" in report["reason"]
    assert not (run_dir / "gguf" / "Modelfile").exists()


# -- the finish screen's key ---------------------------------------------------------------------------

REPORT = {"path": "runs/x/gguf/run-q4_k_m.gguf", "type": "q4_k_m", "passed": True, "reason": "", "size_bytes": 105 * 2**20,
          "top1_agreement": 0.9712, "positions": 312, "answers_identical": 2, "answers": 3, "tokenization_match": True,
          "tokens_per_second": 88.4, "modelfile": "runs/x/gguf/Modelfile",
          "ollama_command": "cd runs/x/gguf && ollama create run -f Modelfile",
          "prompts": [{"shown": "Hi, this is Ana Lima from Lisbon.", "merged": '{"name": "Ana Lima"}',
                       "gguf": '{"name": "Ana Lima", "city": "Lisbon"}', "identical": False}]}


def _fake_export(tmp_path: Path) -> Path:
    script = tmp_path / "fake_export.py"
    script.write_text(
        "import json, sys, time\n"
        "print(json.dumps({'progress': 'Converting merged/ to GGUF ...'}), flush=True)\n"
        "time.sleep(1.5)\n"
        f"print(json.dumps({REPORT!r} | {{'type': sys.argv[sys.argv.index('--gguf') + 1]}}), flush=True)\n")
    return script


def test_key_g_exports_the_chosen_type_and_shows_both_answers(tmp_path, monkeypatch):
    import asyncio

    from textual.widgets import Select, Static

    from tests.conftest import copy_run
    from tests.test_finish_screen import RECORDED, Host
    from tui.screens.finish import FinishScreen

    monkeypatch.setattr(FinishScreen, "EXPORT_COMMAND", (str(_fake_export(tmp_path)),))
    run_dir = copy_run(Path(__file__).resolve().parent.parent / RECORDED, tmp_path / "run")

    async def scenario():
        app = Host(run_dir)
        async with app.run_test(size=(80, 24)) as pilot:  # a small terminal: the panel is below the fold
            await pilot.pause(0.3)
            screen = app.screen
            assert not screen.query_one("#gguf-result").display  # nothing exported yet
            assert "--gguf q4_k_m" in str(screen.query_one("#gguf-command", Static).render())
            screen.query_one("#gguf-type", Select).value = "q8_0"
            await pilot.pause(0.1)
            assert f"lora-tui export {run_dir} --gguf q8_0" in str(screen.query_one("#gguf-command", Static).render())
            panel = screen.query_one("#gguf-panel")
            assert panel.region.y >= app.size.height  # below the fold until asked for
            await pilot.press("g")
            await pilot.pause(1.0)
            assert 0 <= panel.region.y < app.size.height  # g scrolls to where the export happens
            assert "Converting merged/" in str(screen.query_one("#gguf-status", Static).render())  # progress shows
            for _ in range(40):
                if not screen.exporting:
                    break
                await pilot.pause(0.25)
            result = str(screen.query_one("#gguf-result", Static).render())
            assert "GGUF q8_0" in result and "checked" in result and "97.1% of 312 next tokens" in result
            assert "ollama create run -f Modelfile" in result
            assert '"Ana Lima"}' in str(screen.query_one("#gguf-merged-text", Static).render())
            assert '"city": "Lisbon"' in str(screen.query_one("#gguf-file-text", Static).render())

    asyncio.run(scenario())


def test_the_finish_screen_shows_the_runs_last_gguf_check(tmp_path):
    import asyncio

    from textual.widgets import Static

    from engine.runs.events import EventWriter
    from tests.conftest import copy_run
    from tests.test_finish_screen import RECORDED, SIZE, Host

    run_dir = copy_run(Path(__file__).resolve().parent.parent / RECORDED, tmp_path / "run")
    writer = EventWriter(run_dir)
    writer.emit("gguf", **{k: v for k, v in REPORT.items() if k not in ("prompts", "passed", "reason")}, passed=False,
                reason="llama.cpp tokenizes the prompts differently from transformers", examples=REPORT["prompts"])
    writer.close()

    async def scenario():
        app = Host(run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.3)
            result = str(app.screen.query_one("#gguf-result", Static).render())
            assert "FAILED the check" in result and "tokenizes the prompts differently" in result

    asyncio.run(scenario())
