"""The wizard driven as a person drives it (Textual's Pilot), on the demo model and the demo data,
with a fake RTX 4090 (the hardware seam). Checks the session files it writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import Input, Select, SelectionList

from engine.wizard_state import WizardDraft, load_draft, new_session, save_draft
from tui.app import build_app
from tui_helpers import CPU_ONLY, DEMO_DATA, DEMO_MODEL, isolate, screen_text, settle

SIZE = (120, 40)


def run(coro):
    return asyncio.run(coro)


def test_walk_the_whole_wizard_and_save_the_session(tmp_path, monkeypatch):
    state = isolate(monkeypatch, tmp_path)

    async def walk():
        app = build_app(dataset=str(DEMO_DATA), offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.current_step == "hardware"
            assert "NVIDIA GeForce RTX 4090" in screen_text(app)

            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "model"
            text = screen_text(app)
            assert "LlamaForCausalLM" in text and "134,515,008" in text

            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "method"
            text = screen_text(app)
            assert "24.0 GB" in text and "LoRA" in text and "QLoRA" in text
            await pilot.press("ctrl+g")  # the parts of each estimate, on demand
            await pilot.pause()
            assert app.screen.query_one("#parts").display

            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "target_modules"
            await pilot.press("1")  # minimal preset
            await settle(pilot)
            assert sorted(app.session.lora.target_modules) == ["q_proj", "v_proj"]
            minimal_text = screen_text(app)
            await pilot.press("2")  # recommended
            await settle(pilot)
            assert len(app.session.lora.target_modules) == 7
            assert "4,884,480" in screen_text(app) or app.session.lora.r != 16
            assert "Trainable parameters" in minimal_text

            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "dataset"
            text = screen_text(app)
            assert "400" in text and "instruction" in text
            assert "Tokens per row" in text and "Split" in text
            assert app.session.dataset.columns == {"instruction": "instruction", "input": "input", "response": "output"}

            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "hyperparameters"
            learning_rate = app.screen.query_one("#training-learning_rate", Input)
            learning_rate.value = "3"
            await pilot.pause()
            assert "less than 1" in screen_text(app)
            await pilot.press("ctrl+n")  # refused: the field is wrong
            await pilot.pause()
            assert app.current_step == "hyperparameters"
            learning_rate.value = "1e-4"
            await pilot.pause()
            epochs = app.screen.query_one("#training-num_train_epochs", Input)
            epochs.value = "2"
            await pilot.pause()

            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "review"
            assert "lora-tui --replay" in screen_text(app)
            await pilot.press("ctrl+s")
            await pilot.pause()

            # Back keeps what was typed.
            await pilot.press("escape")
            await pilot.pause()
            assert app.current_step == "hyperparameters"
            assert app.screen.query_one("#training-learning_rate", Input).value == "1e-4"
            await pilot.press("escape")
            await settle(pilot)
            assert app.current_step == "dataset"
            assert app.screen.query_one("#dataset-path", Input).value.endswith("extract_contacts.jsonl")
            return app.session

    session = run(walk())
    written = sorted(tmp_path.glob("*.session.json"))
    assert len(written) == 1, list(tmp_path.iterdir())
    data = json.loads(written[0].read_text())
    assert data["model"]["name"] == DEMO_MODEL
    assert data["method"] in ("lora", "qlora", "full")
    assert data["training"]["learning_rate"] == 1e-4 and data["training"]["num_train_epochs"] == 2
    assert data["dataset"]["path"] == str(DEMO_DATA)
    assert data["dataset"]["format"] == "auto" and data["dataset"]["columns"]["response"] == "output"
    assert data["output"]["dir"].startswith("runs/")  # relative to the session file: portable
    assert sorted(data["lora"]["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # The file replays: the engine reads it back as the same session.
    from engine.session import load_session

    assert load_session(written[0]).training == session.training
    # And the session in progress was saved along the way.
    draft = json.loads((state / "last_session.json").read_text())
    assert draft["training"]["learning_rate"] == 1e-4
    assert json.loads((state / "wizard.json").read_text())["step"] == "dataset"


def test_offers_to_continue_the_last_session(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    earlier = new_session(dataset=str(DEMO_DATA))
    earlier = earlier.model_copy(update={"lora": earlier.lora.model_copy(update={"r": 32})})
    save_draft(WizardDraft(earlier, step="target_modules"))

    async def answer(key: str):
        app = build_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert "Continue where you left off?" in screen_text(app)
            assert "extract_contacts.jsonl" in screen_text(app)
            await pilot.press(key)
            await settle(pilot)
            return app.current_step, app.session

    step, session = run(answer("c"))
    assert step == "target_modules" and session.lora.r == 32 and session.dataset.path == str(DEMO_DATA)
    step, session = run(answer("n"))
    assert step == "hardware" and session.lora.r == 16 and session.dataset.path == ""
    assert load_draft() is not None


def test_cpu_only_is_said_plainly_and_plans_against_ram(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path, hardware=CPU_ONLY)

    async def look():
        app = build_app(offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            text = screen_text(app)
            return text, app.budget()

    text, budget = run(look())
    assert "CPU only" in text and "slow" in text
    assert budget.kind == "RAM" and budget.gb == pytest.approx(24.6)


def test_plan_for_a_gpu_from_the_catalogue(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path, hardware=CPU_ONLY)

    async def plan():
        app = build_app(offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            select = app.screen.query_one("#plan-gpu", Select)
            names = [value for _, value in select._options if isinstance(value, str)]
            h100 = next(name for name in names if "H100" in name)
            select.value = h100
            await settle(pilot)
            text = screen_text(app)
            vram = app.screen.query_one("#plan-vram", Input)
            vram.value = "-3"
            await pilot.pause()
            refused = screen_text(app)
            await pilot.press("ctrl+n")
            await pilot.pause()
            return h100, text, refused, app.current_step, app.draft

    h100, text, refused, step, draft = run(plan())
    assert "H100" in text and "planned" in text
    assert "between 0 and 4096" in refused and step == "hardware"


def test_bad_dataset_path_is_one_sentence_and_blocks_next(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)

    async def try_it():
        app = build_app(offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            app.goto("dataset", check=False)
            await settle(pilot)
            path = app.screen.query_one("#dataset-path", Input)
            path.value = "./missing.jsonl"
            await pilot.press("tab")
            path.focus()
            await pilot.press("enter")
            await settle(pilot)
            text = screen_text(app)
            await pilot.press("ctrl+n")
            await pilot.pause()
            return text, app.current_step

    text, step = run(try_it())
    assert "missing.jsonl" in text and "Traceback" not in text
    assert step == "dataset"
