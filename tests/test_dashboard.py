"""The training dashboard, driven by Pilot from recorded run folders.

`tests/fixtures/events/memorise/` is a real run recorded from the worker (the demo model
memorising 7 random strings with 3 held out, eval every 4 steps; see its README): its loss curve,
evaluations, checkpoints, the overfitting finding and the worker's log. Tests copy it to a temporary
folder, because a remedy key rewrites the run's session.json.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import shutil
import socket
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Static
from tui_helpers import notices

from engine.runs.events import EventWriter, read_events
from engine.runs.registry import PAUSE_FILE, STOP_FILE, RunHandle
from engine.session.schema import Session, load_session, save_session
from engine.troubleshooting.diagnostics import Diagnostician
from tui.screens.training import MEMORY_WIDTH, ExampleScreen, TrainingScreen, memory_line, ranks_memory_text
from tui.widgets.findings_panel import FindingsPanel
from tui.widgets.log_tail import LogTail, clean_lines
from tui.widgets.loss_chart import LossChart, thin
from tui.widgets.stat_panel import StatPanel

FIXTURE = Path(__file__).parent / "fixtures" / "events" / "memorise"
HARDWARE = Path(__file__).parent / "hardware"  # profiles for the $LORA_TUI_HARDWARE seam
SIZE = (120, 40)


class Host(App):
    """Shows one run folder, records what the screen tells the app and what it launches."""

    def __init__(self, run_dir: Path, under: bool = False, probe_system: bool = False):
        super().__init__()
        self.run_dir, self.under, self.probe_system = run_dir, under, probe_system
        self.launched: list[tuple[Session, bool]] = []
        self.finished: list = []
        self.changed: list = []

    def on_mount(self) -> None:
        if self.under:  # as in the wizard: the dashboard opened over the review
            from textual.screen import Screen

            self.push_screen(Screen(id="review"))
        self.push_screen(TrainingScreen(self.run_dir, probe_system=self.probe_system, launch=self.launch))

    def launch(self, session: Session, resume: bool = False) -> RunHandle:
        self.launched.append((session, resume))
        return RunHandle(Path(session.output.dir), 0)

    def on_training_screen_run_finished(self, message: TrainingScreen.RunFinished) -> None:
        self.finished.append(message)

    def on_training_screen_session_changed(self, message: TrainingScreen.SessionChanged) -> None:
        self.changed.append(message)


def sync(test):
    """Run an async test body on a fresh event loop (no asyncio plugin needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


async def settle(pilot) -> None:
    """Let the first tick land and the chart's drawing thread finish (a redraw asked for during a
    build starts another one, so wait until none is in flight)."""
    await pilot.pause(0.3)
    for _ in range(100):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.05)
        charts = pilot.app.screen.query(LossChart)
        if not any(chart.drawing for chart in charts) and not any(w.is_running for w in pilot.app.workers):
            break
    await pilot.pause(0.05)


def text_of(widget: Static) -> str:
    return str(widget.render())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    target = tmp_path / "memorise"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture
def live_run(tmp_path: Path) -> Path:
    """A run folder whose worker is at step 3 of 10 (its events only; nothing trains)."""
    run = tmp_path / "live"
    writer = EventWriter(run)
    writer.emit("start", total_steps=10, step=0, resume_from=None, pid=None)
    for step in (1, 2, 3):
        writer.emit("step", step=step, total_steps=10, elapsed=float(step), samples=4 * step, tokens=100 * step,
                    eta_seconds=float(10 - step))
    writer.close()
    return run


def fixture_events() -> list[dict]:
    return read_events(FIXTURE)


# -- what the screen shows --------------------------------------------------------------------------

@sync
async def test_recorded_run_shows_chart_progress_stats_findings_and_log(run_dir):
    events = fixture_events()
    logs = [e for e in events if e["event"] == "log"]
    evals = [e for e in events if e["event"] == "eval"]
    total = next(e for e in events if e["event"] == "start")["total_steps"]
    app = Host(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TrainingScreen)
        chart = screen.query_one(LossChart)
        assert chart.builds >= 1 and chart.points == (len(logs), len(evals))
        assert "▕████████████▏ 100%" in text_of(screen.query_one("#run-state", Static))
        stats = text_of(screen.query_one("#stats", Static))
        assert f"{total} / {total}" in stats and "eval loss" in stats
        assert f"{logs[-1]['loss']:.4f}" in stats
        panel = "\n".join(text_of(s) for s in screen.query_one(FindingsPanel).query(".finding"))
        assert "Overfitting" in panel and "[1]" in panel and "Stop at the best evaluation" in panel
        assert screen.query_one(LogTail).line_count > 0
    assert [m.status for m in app.finished] == ["completed"]  # posted once, for the finish screen


@sync
async def test_remedy_key_applies_the_change_saves_the_session_and_restarts(run_dir):
    finding = next(e for e in fixture_events() if e["event"] == "finding" and e["kind"] == "overfitting")
    best = finding["evidence"]["best_step"]
    app = Host(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
    saved = load_session(run_dir / "session.json")
    assert saved.training.max_steps == best
    assert len(app.launched) == 1
    session, resume = app.launched[0]
    assert session.training.max_steps == best and resume is False  # stop_at_best starts afresh
    assert app.changed and app.changed[0].remedy["id"] == "stop_at_best"


@sync
async def test_advice_remedy_changes_nothing_and_launches_nothing(run_dir):
    before = (run_dir / "session.json").read_text()
    finding = next(e for e in fixture_events() if e["event"] == "finding" and e["kind"] == "overfitting")
    key = str([r["id"] for r in finding["remedies"]].index("more_data") + 1)
    app = Host(run_dir)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)
        assert any("more varied rows" in n for n in notices(app))
    assert (run_dir / "session.json").read_text() == before and app.launched == []


@sync
async def test_a_key_without_a_remedy_says_so(run_dir):
    app = Host(run_dir)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("9")
        await pilot.pause(0.1)
        assert any("No remedy 9" in n for n in notices(app))
    assert app.launched == []


@sync
async def test_check_data_remedy_shows_the_rendered_example(tmp_path):
    run = tmp_path / "flat"
    session = Session.model_validate({"dataset": {"path": "train.jsonl"}, "output": {"dir": str(run)},
                                      "training": {"learning_rate": 1e-9, "logging_steps": 1, "max_steps": 30}})
    save_session(session, run / "session.json")
    diag = Diagnostician(session)
    writer = EventWriter(run)
    rng = random.Random(3)
    for event in (
        {"event": "start", "total_steps": 30, "step": 0, "resume_from": None, "pid": None},
        {"event": "data", "train_rows": 40, "examples": [{"text": "x", "segments": [
            ["### Instruction:\nSay hi.\n\n### Response:\n", False], ["hi", True]]}]},
        *[{"event": "log", "step": s, "loss": 3.8 + rng.gauss(0, 0.1), "learning_rate": 1e-9} for s in range(1, 13)],
    ):
        writer.emit(**event)
        for finding in diag.observe(event):
            writer.emit(**finding)
    writer.close()
    app = Host(run)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        finding = app.screen.view.findings[0]
        assert finding["kind"] == "no_decrease"
        key = str([r["id"] for r in finding["remedies"]].index("check_data") + 1)
        await pilot.press(key)
        await pilot.pause(0.2)
        assert isinstance(app.screen, ExampleScreen)
        assert "### Response:\n\u25b6hi\u25c0" in app.screen.text
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert isinstance(app.screen, TrainingScreen)


# -- keys ---------------------------------------------------------------------------------------------

@sync
async def test_stop_and_pause_keys_write_the_worker_requests_and_show_at_once(live_run):
    app = Host(live_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        bar = app.screen.query_one("#run-state", Static)
        assert "running" in text_of(bar) and "step 3 / 10" in text_of(bar)
        await pilot.press("p")
        assert (live_run / PAUSE_FILE).exists() and "pausing" in text_of(bar)
        await pilot.press("p")
        assert not (live_run / PAUSE_FILE).exists() and "resuming" in text_of(bar)
        await pilot.press("s")
        assert (live_run / STOP_FILE).exists()
        assert "stopping after step 4" in text_of(bar)  # before any event confirms it
        assert bar.region.y == 0 and bar.region.height == 1  # docked: in view at 80x24


@sync
async def test_stop_on_a_finished_run_requests_nothing(run_dir):
    app = Host(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        assert not (run_dir / STOP_FILE).exists()


@sync
async def test_o_copies_the_run_folder_path(run_dir):
    app = Host(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("o")
        assert app.clipboard == str(run_dir.resolve())


@sync
async def test_escape_goes_back_to_the_screen_below(run_dir):
    app = Host(run_dir, under=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert app.screen.id == "review"


# -- live reading ---------------------------------------------------------------------------------------

@sync
async def test_a_burst_of_events_is_one_redraw_and_a_restart_resets_the_view(tmp_path):
    run = tmp_path / "live"
    run.mkdir()
    app = Host(run)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        panel = screen.query_one(StatPanel)
        shows = []
        original = panel.show
        panel.show = lambda view, memory: (shows.append(view.step), original(view, memory))
        writer = EventWriter(run)
        writer.emit("start", total_steps=1000, step=0, resume_from=None, pid=None)
        for step in range(1, 501):
            writer.emit("log", step=step, loss=2.0 + math.exp(-step / 50), learning_rate=2e-4, total_steps=1000)
        screen.refresh_from_events()
        # 501 events, one redraw (two when the screen's own timer lands mid-burst on a busy machine)
        assert shows[-1] == 500 and len(shows) <= 2, shows
        assert screen.view.step == 500 and len(screen.view.train) == 500
        # a fresh start in the same folder (a remedy restarted it) replaces the old curve
        writer.emit("start", total_steps=200, step=0, resume_from=None, pid=None)
        writer.emit("log", step=1, loss=3.0)
        screen.refresh_from_events()
        assert screen.view.total_steps == 200 and screen.view.train == [(1, 3.0)]
        writer.close()
        # events.jsonl replaced by a shorter one: read from the start again
        (run / "events.jsonl").write_text(json.dumps({"event": "start", "total_steps": 7, "step": 0}) + "\n")
        screen.refresh_from_events()
        assert screen.view.total_steps == 7 and screen.view.train == []


@sync
async def test_a_covered_dashboard_stops_polling_until_it_shows_again(live_run):
    # Under the finish screen (or a dialog) the dashboard is not seen: reading events there was a
    # steady 2-4 % of a core spent on nothing (benchmarks/dashboard_cpu.py, the completed run).
    from textual.screen import Screen

    app = Host(live_run)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        dashboard = app.screen
        assert dashboard.view.step == 3
        await app.push_screen(Screen(id="cover"))
        writer = EventWriter(live_run)
        writer.emit("step", step=4, total_steps=10, elapsed=4.0, samples=16, tokens=400, eta_seconds=6.0)
        writer.close()
        await pilot.pause(1.5)  # three poll intervals
        assert dashboard.view.step == 3  # not read while covered
        app.pop_screen()
        await pilot.pause(1.0)
        assert dashboard.view.step == 4  # read as soon as it shows again


def test_resumed_start_keeps_the_curve_up_to_its_checkpoint():
    from engine.runs.progress import RunProgress

    view = RunProgress()
    for event in [{"event": "start", "total_steps": 20, "step": 0}, *[
        {"event": "log", "step": s, "loss": 1.0 / s} for s in range(1, 11)
    ], {"event": "start", "total_steps": 20, "step": 8, "resume_from": "/r/checkpoint-8"}]:
        view.apply(event)
    assert [p[0] for p in view.train] == list(range(1, 9)) and view.status_detail == "resumed from checkpoint-8"


def test_an_automatic_oom_retry_stays_visible_after_the_restart():
    from engine.runs.progress import RunProgress
    from engine.troubleshooting.oom import finding as oom_finding

    session = Session.model_validate({"dataset": {"path": "d.jsonl"}, "training": {"gradient_checkpointing": False}})
    finding = oom_finding(session, 3, "CUDA out of memory. Tried to allocate 2.00 GiB")
    view = RunProgress()
    for event in [
        {"event": "start", "total_steps": 20, "step": 0},
        {"event": "log", "step": 2, "loss": 2.0},
        finding,
        {"event": "error", "kind": "oom", "message": "Out of memory at step 3: CUDA out of memory."},
        {"event": "retry", "reason": "oom", "remedy": finding["remedies"][0],
         "message": "Out of memory: retrying with Turn gradient checkpointing on (restarting)."},
        {"event": "start", "total_steps": 20, "step": 0, "resume_from": None},
    ]:
        view.apply(event)
    assert view.status_word == "running" and view.train == []
    assert [f["kind"] for f in view.findings] == ["oom"]
    assert view.notes == ["Out of memory: retrying with Turn gradient checkpointing on (restarting)."]


def test_thin_keeps_the_last_point_and_a_bounded_count():
    points = [(float(i), float(i)) for i in range(10_001)]
    thinned = thin(points, 400)
    assert len(thinned) <= 401 and thinned[-1] == points[-1] and thinned[0] == points[0]


def test_log_tail_keeps_what_a_progress_bar_finally_said():
    assert clean_lines("a\n 10%|#  | 1/9\r 20%|## | 2/9\n\x1b[32mok\x1b[0m\n") == ["a", " 20%|## | 2/9", "ok"]


# -- memory of every GPU the run uses ------------------------------------------------------------------

@pytest.fixture
def gpus(monkeypatch):
    """Fake this machine's GPUs through the hardware seam: `gpus("h100x8.json")`."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return lambda profile: monkeypatch.setenv("LORA_TUI_HARDWARE", str(HARDWARE / profile))


@pytest.mark.parametrize("profile, processes, line", [
    ("rtx4090.json", 1, "0.9 / 24 GiB RTX 4090"),
    ("rtx4090x2.json", 2, "10.2 · 9.8 / 24 GiB"),
    ("h100x8.json", 8, "8× 9.8-10.4 / 80 GiB"),
])
def test_memory_line_shows_each_gpu_the_run_uses_in_one_row_at_80_columns(gpus, profile, processes, line):
    gpus(profile)
    assert memory_line(None, processes) == line and len(line) <= MEMORY_WIDTH


def test_memory_line_says_more_where_the_panel_is_wider(gpus):
    gpus("rtx4090x2.json")
    assert memory_line(None, 2, width=40) == "GPU0 10.2 · GPU1 9.8 / 24 GiB RTX 4090"
    assert memory_line(None, 1, width=40) == "10.2 / 24 GiB RTX 4090"  # one process: the first GPU only
    assert memory_line(None, 4) == "10.2 · 9.8 / 24 GiB"  # no more GPUs than this machine has
    gpus("h100x8.json")
    assert memory_line(None, 8, width=25) == "8 GPUs 9.8-10.4 / 80 GiB"
    assert memory_line(None, 8, width=60) == "8 GPUs 9.8-10.4 / 80 GiB H100 80GB HBM3"  # a range, not 8 numbers
    assert memory_line(None, 2) == "10.1 · 9.8 / 80 GiB"  # 2 processes on an 8-GPU node: GPUs 0 and 1


def test_memory_line_follows_cuda_visible_devices(gpus, monkeypatch):
    gpus("rtx4090x2.json")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the run was launched on the second GPU
    assert memory_line(None, 1) == "9.8 / 24 GiB RTX 4090"


def test_a_cpu_run_still_shows_the_workers_ram(gpus):
    gpus("cpu_only.json")
    assert memory_line(os.getpid(), 2).endswith(" GiB RAM") and memory_line(None) == "-"


def test_the_workers_own_peaks_per_process_fit_too():
    assert ranks_memory_text([8.1, 7.9]) == "8.1 · 7.9 GiB (ranks)"
    assert ranks_memory_text([8.1, 7.9, 8.4, 8.0, 8.2, 8.3, 8.0, 8.1]) == "8 ranks 7.9-8.4 GiB"


def two_process_run(tmp_path: Path) -> Path:
    """A DDP run of 2 processes on this machine at step 2 (its events only; nothing trains)."""
    run = tmp_path / "ddp"
    writer = EventWriter(run)
    writer.emit("start", total_steps=10, step=0, resume_from=None, pid=os.getpid(), host=socket.gethostname(),
                world_size=2, strategy="ddp", gpu="NVIDIA GeForce RTX 4090")
    writer.emit("log", step=2, loss=2.5, total_steps=10, memory_gb=8.1, memory_gb_ranks=[8.1, 7.9])
    writer.emit("eval", step=2, eval_loss=2.6)
    writer.close()
    return run


def memory_row(screen) -> tuple[str, int]:
    stats = screen.query_one("#stats", Static)
    return next(line for line in text_of(stats).splitlines() if line.startswith("memory")), stats.content_size.width


@sync
async def test_the_dashboard_of_a_two_process_run_shows_both_gpus(tmp_path, gpus):
    gpus("rtx4090x2.json")
    app = Host(two_process_run(tmp_path), probe_system=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        row, width = memory_row(app.screen)
        assert row == "memory     10.2 · 9.8 / 24 GiB"
        assert len(row) <= width  # one row: a wrapped one pushes the panel's last row out of its fixed height


@sync
async def test_without_nvml_figures_the_dashboard_shows_each_processs_peak(tmp_path):
    app = Host(two_process_run(tmp_path))  # nothing probed: as when watching a run of another machine
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert memory_row(app.screen)[0] == "memory     8.1 · 7.9 GiB (ranks)"


def gpu_run_with_eval(tmp_path: Path) -> Path:
    """A run on this machine's RTX 4090 at step 33 of 100 after an hour, with an eval (its events only)."""
    run = tmp_path / "gpu"
    writer = EventWriter(run)
    writer.emit("start", total_steps=100, step=0, resume_from=None, pid=os.getpid(), host=socket.gethostname(),
                world_size=1, gpu="NVIDIA GeForce RTX 4090")
    writer.emit("step", step=33, total_steps=100, elapsed=3600.0, samples=132, tokens=13200, eta_seconds=7200.0)
    writer.emit("log", step=33, loss=2.5, total_steps=100, memory_gb=0.9)
    writer.emit("eval", step=33, eval_loss=2.6)
    writer.close()
    return run


@sync
async def test_every_stat_row_of_a_priced_gpu_run_fits_one_line_at_80_columns(tmp_path, gpus, monkeypatch):
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))  # the shipped example prices, not the person's
    gpus("rtx4090.json")
    app = Host(gpu_run_with_eval(tmp_path / "80"), probe_system=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        stats = app.screen.query_one("#stats", Static)
        rows, width = text_of(stats).splitlines(), stats.content_size.width
        assert "cost       $0.69 · $1.38 to go" in rows and "price      $0.69/h*" in rows
        assert all(len(row) <= width for row in rows), [row for row in rows if len(row) > width]
        # Nothing wrapped: the last row, eval loss, is still inside the panel's fixed height.
        assert rows[-1] == "eval loss  2.6000" and len(rows) <= stats.size.height
        assert stats.get_content_height(stats.size, stats.size, width) <= stats.size.height
    app = Host(gpu_run_with_eval(tmp_path / "160"), probe_system=True)
    async with app.run_test(size=(160, 40)) as pilot:  # room for the full wording (not yet at 120 columns)
        await settle(pilot)
        rows = text_of(app.screen.query_one("#stats", Static)).splitlines()
        assert "cost       $0.69 so far · $1.38 to go" in rows
        assert any(row.startswith("price      $0.69/h (example price, ") for row in rows)


# -- snapshot -----------------------------------------------------------------------------------------

def test_dashboard_snapshot(run_dir, snap_compare):
    assert snap_compare(Host(run_dir), terminal_size=SIZE, run_before=settle)
