"""Save an SVG of each wizard screen into screenshots/ (`make screenshots`).

The app draws them itself (`App.save_screenshot`), headless, at 120x40, on the demo model and the
demo data. The hardware comes from the one fake-hardware seam ($LORA_TUI_HARDWARE) so the pictures
are the same on every machine: an RTX 4090 profile, plus the CPU-only case.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from textual.app import App

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "screenshots"
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"
HARDWARE = ROOT / "tests" / "hardware"
SIZE = (120, 40)
STEPS = ("hardware", "model", "method", "target_modules", "dataset", "hyperparameters", "review")


async def settle(pilot) -> None:
    from textual.worker import WorkerCancelled, WorkerFailed

    quiet = 0
    for _ in range(100):
        for worker in list(pilot.app.workers):
            try:
                await worker.wait()
            except (WorkerCancelled, WorkerFailed):
                pass
        await pilot.pause(0.15)
        quiet = quiet + 1 if all(w.is_finished for w in pilot.app.workers) else 0
        if quiet >= 3:
            return


async def shoot(profile: str, shots: list[tuple[str, str]], extra=None) -> list[Path]:
    """Walk the wizard on one hardware profile; `shots` are (step, file name) pairs."""
    os.environ["LORA_TUI_HARDWARE"] = str(HARDWARE / profile)
    from tui.app import build_app

    app = build_app(dataset=str(DEMO_DATA), offer_resume=False, autosave=False)
    saved = []
    async with app.run_test(size=SIZE) as pilot:
        for step, name in shots:
            if step != app.current_step:
                app.goto(step, check=False)
            await settle(pilot)
            if extra and step in extra:
                await extra[step](pilot)
                await settle(pilot)
            saved.append(Path(app.save_screenshot(name, str(OUT))))
    return saved


async def shoot_run_screens() -> list[Path]:
    """The dashboard on a recorded memorisation run (overfitting found) and the finish screen on a
    recorded finished run; both read copies of the fixtures under tests/fixtures/events/."""
    import shutil

    from tui.screens.finish import FinishScreen
    from tui.screens.training import TrainingScreen

    fixtures = ROOT / "tests" / "fixtures" / "events"
    runs = Path(tempfile.gettempdir()) / "lora-tui-shots" / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    saved = []
    for fixture, name, make in (
        ("memorise", "08-training.svg", lambda d: TrainingScreen(d, probe_system=False)),
        ("finished", "09-finish.svg", lambda d: FinishScreen(d)),
    ):
        run_dir = runs / fixture
        shutil.copytree(fixtures / fixture, run_dir)

        app = Viewer(make(run_dir))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.pause(1.0)  # the chart draws off the event loop
            await settle(pilot)
            saved.append(Path(app.save_screenshot(name, str(OUT))))
    return saved


async def shoot_gguf_check() -> list[Path]:
    """The finish screen's GGUF panel after `g`: the recorded finished run plus a real export's check
    (tests/fixtures/events/gguf-check.json, the report `lora-tui export --gguf q4_k_m` wrote for the demo)."""
    import json
    import shutil

    from engine.runs.events import EventWriter
    from tui.screens.finish import FinishScreen

    fixtures = ROOT / "tests" / "fixtures" / "events"
    run_dir = Path(tempfile.gettempdir()) / "lora-tui-shots" / "runs" / "finished-gguf"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(fixtures / "finished", run_dir)
    report = json.loads((fixtures / "gguf-check.json").read_text())
    writer = EventWriter(run_dir)
    writer.emit("gguf", **report)
    writer.close()
    app = Viewer(FinishScreen(run_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#gguf-panel").scroll_visible(top=True, animate=False)
        await settle(pilot)
        return [Path(app.save_screenshot("11-finish-gguf.svg", str(OUT)))]


class Viewer(App):
    """Shows one screen, as the wizard would over its steps."""

    CSS_PATH = str(ROOT / "tui" / "styles" / "app.tcss")

    def __init__(self, first_screen):
        super().__init__()
        self.first_screen = first_screen

    def on_mount(self) -> None:
        self.push_screen(self.first_screen)


async def main() -> int:
    OUT.mkdir(exist_ok=True)
    os.chdir(ROOT)  # paths show relative to the project, as a person running `make demo` sees them
    os.environ["LORA_TUI_STATE"] = tempfile.mkdtemp(prefix="lora-tui-shots-")  # leave the real draft alone

    async def show_parts(pilot):
        await pilot.press("ctrl+g")

    saved = await shoot("rtx4090.json", [(s, f"{i + 1:02d}-{s.replace('_', '-')}.svg") for i, s in enumerate(STEPS)])
    saved += await shoot("rtx4090.json", [("method", "03b-method-parts.svg")], extra={"method": show_parts})
    saved += await shoot("cpu_only.json", [("hardware", "01b-hardware-cpu-only.svg"), ("method", "03c-method-cpu-only.svg")])
    saved += await shoot_run_screens()
    saved += await shoot_gguf_check()
    for path in saved:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
