"""Snapshots of every wizard screen (pytest-textual-snapshot), on fake hardware for determinism.

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`, then
look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest
from tui_helpers import CPU_ONLY, DEMO_DATA, ROOT, RTX_4090, settle

from engine.session.draft import WizardDraft, new_session
from tui.app import LoraTuiApp, build_app

WIDE = (120, 40)
SMALL = (80, 24)


@pytest.fixture(autouse=True)
def deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LORA_TUI_HARDWARE", str(RTX_4090))
    monkeypatch.chdir(ROOT)  # paths are shown relative to the working folder


def wizard_at(step: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        if step != "hardware":
            app.goto(step, check=False)
        await settle(pilot)
        steady_cursors(app)

    return run_before


def steady_cursors(app) -> None:
    """A blinking input cursor would make a snapshot depend on the moment it is taken."""
    from textual.widgets import Input

    for screen in app.screen_stack:
        for field in screen.query(Input):
            field.cursor_blink = False


def demo_app() -> LoraTuiApp:
    return build_app(dataset=str(DEMO_DATA), offer_resume=False, autosave=False)


@pytest.mark.parametrize("step", ["hardware", "model", "method", "target_modules", "dataset", "hyperparameters", "review"])
def test_each_step_at_120x40(snap_compare, step):
    assert snap_compare(demo_app(), terminal_size=WIDE, run_before=wizard_at(step))


@pytest.mark.parametrize("step", ["hardware", "method", "dataset", "hyperparameters"])
def test_usable_at_80x24(snap_compare, step):
    assert snap_compare(demo_app(), terminal_size=SMALL, run_before=wizard_at(step))


def test_cpu_only_hardware(snap_compare, monkeypatch):
    monkeypatch.setenv("LORA_TUI_HARDWARE", str(CPU_ONLY))
    assert snap_compare(demo_app(), terminal_size=WIDE, run_before=wizard_at("hardware"))


def test_method_parts_shown(snap_compare):
    async def run_before(pilot) -> None:
        await wizard_at("method")(pilot)
        await pilot.press("ctrl+g")
        await pilot.pause()
        steady_cursors(pilot.app)

    assert snap_compare(demo_app(), terminal_size=WIDE, run_before=run_before)


def test_resume_prompt(snap_compare):
    offer = WizardDraft(new_session(dataset=str(DEMO_DATA)), step="dataset")
    app = LoraTuiApp(WizardDraft(new_session()), resume_offer=offer, autosave=False)
    assert snap_compare(app, terminal_size=SMALL, run_before=wizard_at("hardware"))
