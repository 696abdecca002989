"""The wizard driven as a person drives it (Textual's Pilot), on the demo model and the demo data,
with a fake RTX 4090 (the hardware seam). Checks the session files it writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import Input, Select
from tui_helpers import CPU_ONLY, DEMO_DATA, DEMO_MODEL, isolate, notices, screen_text, settle

from engine.session.draft import WizardDraft, load_draft, new_session, save_draft
from tui.app import build_app

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
    from engine.session.schema import load_session

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
            await settle(pilot)  # the saved draft is validated after the first frame, then offered
            assert "Continue where you left off?" in screen_text(app)
            assert "extract_contacts.jsonl" in screen_text(app)
            await pilot.press(key)
            await settle(pilot)
            return app.current_step, app.session

    async def quit_at_the_question():
        app = build_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+q")

    run(quit_at_the_question())
    assert load_draft().session.lora.r == 32  # the unanswered offer was not overwritten

    step, session = run(answer("c"))
    assert step == "target_modules" and session.lora.r == 32 and session.dataset.path == str(DEMO_DATA)
    step, session = run(answer("n"))
    assert step == "hardware" and session.lora.r == 16 and session.dataset.path == ""
    assert load_draft() is not None


def test_a_draft_the_schema_no_longer_accepts_is_not_offered(tmp_path, monkeypatch):
    state = isolate(monkeypatch, tmp_path)
    state.mkdir(parents=True)
    (state / "last_session.json").write_text(json.dumps({"dataset": {"path": ""}, "lora": {"r": 0}}))
    (state / "wizard.json").write_text(json.dumps({"step": "dataset"}))

    async def start():
        app = build_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            shown = screen_text(app)
            await pilot.press("ctrl+n")  # moving on saves the fresh session over the stale one
            await settle(pilot)
            return shown, app.resume_offer, app.current_step

    shown, offer, step = run(start())
    assert "Continue where you left off?" not in shown and "Hardware" in shown
    assert offer is None and step == "model"
    assert json.loads((state / "last_session.json").read_text())["lora"]["r"] == 16
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
            from engine.planner.hardware import load_gpu_catalogue

            select = app.screen.query_one("#plan-gpu", Select)
            h100 = next(spec.name for spec in load_gpu_catalogue() if "H100" in spec.name)
            select.value = h100  # refused by Select if the list did not offer it
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


def test_the_gpu_list_appears_after_the_first_frame_and_quitting_meanwhile_is_clean(tmp_path, monkeypatch):
    from tui.screens import hardware

    isolate(monkeypatch, tmp_path, hardware=CPU_ONLY)
    monkeypatch.setattr(hardware.HardwareScreen, "load_catalogue", lambda screen: None)  # held back

    async def quit_as_the_list_arrives():
        app = build_app(offer_resume=False, autosave=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            waiting = screen_text(app)
            assert not screen.query("#plan-gpu")
            screen.catalogue_done([{"name": "H100 SXM", "total_gb": 80}])  # what the held-back worker returns
            app.exit()  # in the same instant: the list is still being put together
        return waiting

    for _ in range(3):
        waiting = run(quit_as_the_list_arrives())  # raises if the closing app hit a half-built list
    assert "reading the GPU catalogue" in waiting


def test_a_plan_that_fits_only_with_unsloth_pins_the_backend(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path, hardware=CPU_ONLY)
    config = Path(__file__).resolve().parent / "configs" / "llama-3.1-70b"  # meta device: no weights

    async def plan():
        app = build_app(model=str(config), dataset=str(DEMO_DATA), vram_gb=48, offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            app.goto("method", check=False)
            await settle(pilot)
            return app.session, screen_text(app)

    session, text = run(plan())
    assert session.method == "qlora" and session.backend == "unsloth", (session.method, session.backend)
    assert "only with Unsloth's kernels" in text


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


def _interrupted_run(tmp_path: Path) -> Path:
    """A run folder as a killed worker leaves it: a start event, some logs, no live process."""
    from engine.runs.events import EventWriter
    from engine.runs.registry import remember_run

    run_dir = tmp_path / "runs" / "cut-short"
    writer = EventWriter(run_dir)
    writer.emit("start", total_steps=40, pid=2**22 + 12345)  # no such process
    for step in (1, 2, 3):
        writer.emit("log", step=step, loss=2.0 - 0.1 * step, learning_rate=1e-4)
    writer.close()
    remember_run(run_dir)
    return run_dir


def test_start_offers_interrupted_runs_before_the_session(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    run_dir = _interrupted_run(tmp_path)
    save_draft(WizardDraft(new_session(dataset=str(DEMO_DATA)), step="dataset"))

    async def start():
        app = build_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            first = screen_text(app)
            await pilot.press("escape")  # on to the wizard
            await settle(pilot)
            second = screen_text(app)
            return first, second

    first, second = run(start())
    assert "interrupted" in first and str(run_dir) in first and "step 3/40" in first
    assert "Continue where you left off?" in second


@pytest.mark.training
def test_train_launches_the_run_and_opens_its_dashboard(tmp_path, monkeypatch):
    """Review's Train starts a real (short) run in its own process and shows the training screen."""
    isolate(monkeypatch, tmp_path, hardware=CPU_ONLY)

    session = new_session(dataset=str(DEMO_DATA)).to_dict()
    session["training"].update(max_steps=2, logging_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1)
    session["model"]["max_seq_length"] = 256
    from engine.session.schema import session_from_dict

    draft = WizardDraft(session_from_dict(session), step="review")

    async def train():
        from tui.app import LoraTuiApp

        app = LoraTuiApp(draft, autosave=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
            for _ in range(50):
                if type(app.screen).__name__ == "TrainingScreen":
                    break
                await pilot.pause(0.2)
            from engine.runs.registry import SUPERVISOR_PID_FILE, pid_alive

            run_dir = Path(app.session.output.dir)
            pid_file = run_dir / SUPERVISOR_PID_FILE
            for _ in range(600):  # a loaded machine can take a while to start a Python process
                if pid_file.is_file():
                    break
                await pilot.pause(0.1)
            alive = pid_file.is_file() and pid_alive(int(pid_file.read_text().split()[0]))
            return type(app.screen).__name__, str(run_dir), alive

    screen, run_dir, alive = run(train())
    assert screen == "TrainingScreen"
    assert (Path(run_dir) / "session.json").is_file()
    assert alive, "the run's supervisor process was not running right after Train"
    _stop_run(Path(run_dir))


def _stop_run(run_dir: Path, grace: float = 180) -> None:
    """Do not leave a training process behind: a graceful stop, then SIGTERM to its process group."""
    import os
    import signal
    import time

    from engine.runs.registry import SUPERVISOR_PID_FILE, pid_alive, request_stop

    request_stop(run_dir)
    pid_file = run_dir / SUPERVISOR_PID_FILE
    pid = int(pid_file.read_text().split()[0]) if pid_file.is_file() else None
    deadline = time.time() + grace
    while pid and pid_alive(pid) and time.time() < deadline:
        time.sleep(1)
    if pid and pid_alive(pid):
        os.killpg(pid, signal.SIGTERM)  # the supervisor leads its own group (start_new_session)
        for _ in range(120):
            if not pid_alive(pid):
                break
            time.sleep(1)


def test_a_keymap_in_the_state_folder_remaps_a_binding_by_its_id(tmp_path, monkeypatch):
    state = isolate(monkeypatch, tmp_path)
    state.mkdir(parents=True)
    (state / "keymap.json").write_text(json.dumps({"wizard.next": "ctrl+right"}))

    async def walk():
        app = build_app(dataset=str(DEMO_DATA), offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.current_step == "hardware"
            await pilot.press("ctrl+n")  # the default key no longer moves on
            await settle(pilot)
            assert app.current_step == "hardware"
            await pilot.press("ctrl+right")
            await settle(pilot)
            assert app.current_step == "model"

    run(walk())


def test_a_bad_keymap_is_one_sentence_and_the_default_keys_stay(tmp_path, monkeypatch):
    state = isolate(monkeypatch, tmp_path)
    state.mkdir(parents=True)
    (state / "keymap.json").write_text('{"wizard.next": 3}')

    async def walk():
        app = build_app(dataset=str(DEMO_DATA), offer_resume=False)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await settle(pilot)
            notes = notices(app)
            assert any("keymap.json" in n and '"wizard.next" must map to keys' in n for n in notes), notes
            await pilot.press("ctrl+n")
            await settle(pilot)
            assert app.current_step == "model"

    run(walk())


def test_a_remedy_that_changed_the_run_session_becomes_the_wizard_session(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    from engine.session.schema import session_from_dict
    from tui.screens.training import TrainingScreen

    draft = WizardDraft(new_session(dataset=str(DEMO_DATA)), step="review")
    fixed = draft.session.with_changes({"training.learning_rate": 5e-5}, where="remedy 'lower_learning_rate'")

    async def remedy():
        from tui.app import LoraTuiApp

        app = LoraTuiApp(draft, autosave=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            app.screen.post_message(TrainingScreen.SessionChanged(fixed, tmp_path / "session.json", {"id": "x"}))
            await pilot.pause(0.2)
            return app.session

    assert run(remedy()).training.learning_rate == 5e-5
    assert session_from_dict(load_draft().session.to_dict()).training.learning_rate == 5e-5  # and saved


def test_the_prompt_layout_follows_the_model_unless_the_person_chose_one(tmp_path, monkeypatch):
    import shutil

    isolate(monkeypatch, tmp_path)
    configs = Path(__file__).resolve().parent / "configs"
    instruct = shutil.copytree(configs / "qwen2.5-0.5b", tmp_path / "Qwen2.5-0.5B-Instruct")  # meta device: no weights

    async def change_model(to: Path, chosen_layout=None):
        app = build_app(dataset=str(DEMO_DATA), offer_resume=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            before = app.session.dataset.template
            if chosen_layout:
                app.edit_session({"dataset.template": chosen_layout})
            app.goto("model", check=False)
            await settle(pilot)
            app.screen.query_one("#model-name", Input).value = str(to)
            await pilot.press("ctrl+n")
            await settle(pilot)
            return before, app.session.dataset.template

    # The instruct demo starts in its chat template; a base model gets the Alpaca layout.
    assert run(change_model(configs / "llama-3.1-8b")) == ("chat", "alpaca")
    # Another instruct model would get its chat template, but the person chose Alpaca: it stays.
    assert run(change_model(instruct)) == ("chat", "chat")
    assert run(change_model(instruct, chosen_layout="alpaca")) == ("chat", "alpaca")
