"""The training dashboard: a run folder's events, live, with the troubleshooting panel.

The screen only reads: `events.jsonl` through `EventTail` on a timer (one refresh per tick
however many events arrived, so a fast run cannot flood the UI) and `worker.log` for the last
lines. Training runs in its own process (see `engine.runs.registry`); leaving this screen leaves it running.
A remedy key applies the remedy to the run's session, saves it, and restarts or resumes the run.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from engine.runs.events import EVENTS_FILE, EventTail
from tui.widgets.findings_panel import FindingsPanel, numbered_remedies
from tui.widgets.footer import StableFooter
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_chart import LossChart
from tui.widgets.stat_panel import StatPanel

TICK_SECONDS = 0.25  # 4 Hz: smooth enough to watch, cheap enough to leave the worker every core
MAX_EVENTS_PER_TICK = 1000
CHART_SECONDS = 1.0
MEMORY_POLL_SECONDS = 2.0
STOP_WAIT_SECONDS = 300.0  # how long a remedy waits for the old run to checkpoint and end


def _number(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunView:
    """Everything the dashboard shows, folded from the event stream (no Textual here)."""

    total_steps: Optional[int] = None
    step: int = 0
    epoch: Optional[float] = None
    elapsed: Optional[float] = None
    eta_seconds: Optional[float] = None
    tokens_per_second: Optional[float] = None
    samples_per_second: Optional[float] = None
    memory_gb: Optional[float] = None
    learning_rate: Optional[float] = None
    grad_norm: Optional[float] = None
    last_loss: Optional[float] = None
    train: list[tuple[float, float]] = field(default_factory=list)
    evals: list[tuple[float, float]] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)  # latest per kind, in order of arrival
    notes: list[str] = field(default_factory=list)  # automatic retries and the like
    status_word: str = "waiting"
    status_detail: str = "for the worker to start"
    pid: Optional[int] = None
    example: Optional[str] = None  # a rendered training example, from the worker's data report
    ended: bool = False
    end_event: Optional[dict] = None

    @property
    def running(self) -> bool:
        return self.status_word == "running"

    def apply(self, event: dict) -> None:
        kind = event.get("event")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)

    def _on_start(self, event: dict) -> None:
        resumed_at = event.get("step") or 0
        if event.get("resume_from"):
            # A resumed run repeats nothing before its checkpoint; drop what came after it.
            self.train = [p for p in self.train if p[0] <= resumed_at]
            self.evals = [p for p in self.evals if p[0] <= resumed_at]
        else:
            self.train, self.evals, self.learning_rates, self.grad_norms = [], [], [], []
            self.findings = [f for f in self.findings if f.get("kind") == "oom"]  # why it restarted
        self.total_steps = event.get("total_steps") or self.total_steps
        self.step = int(resumed_at)
        self.pid = event.get("pid") or self.pid
        self.ended, self.end_event = False, None
        self.status_word = "running"
        self.status_detail = f"resumed from {Path(event['resume_from']).name}" if event.get("resume_from") else ""

    def _on_log(self, event: dict) -> None:
        step = event.get("step")
        if isinstance(step, (int, float)):
            self.step = int(step)
        self.total_steps = event.get("total_steps") or self.total_steps
        for name in ("epoch", "elapsed", "eta_seconds", "tokens_per_second", "samples_per_second", "memory_gb"):
            value = _number(event.get(name))
            if value is not None:
                setattr(self, name, value)
        loss = event.get("loss")
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            self.last_loss = float(loss)
            if math.isfinite(loss):
                self.train.append((self.step, float(loss)))
        lr, grad = _number(event.get("learning_rate")), _number(event.get("grad_norm"))
        if lr is not None:
            self.learning_rate = lr
            self.learning_rates.append(lr)
        if grad is not None:
            self.grad_norm = grad
            self.grad_norms.append(grad)

    def _on_eval(self, event: dict) -> None:
        loss = _number(event.get("eval_loss"))
        if loss is not None and isinstance(event.get("step"), (int, float)):
            self.evals.append((event["step"], loss))

    def _on_finding(self, event: dict) -> None:
        self.findings = [f for f in self.findings if f.get("kind") != event.get("kind")] + [event]

    def _on_data(self, event: dict) -> None:
        from engine.troubleshooting.diagnostics import example_text

        self.example = example_text(event) or self.example

    def _on_status(self, event: dict) -> None:
        state = event.get("state")
        words = {"loading_model": ("starting", "loading the model"), "preparing_data": ("starting", "preparing the data"),
                 "paused": ("paused", f"at step {event.get('step', self.step)}"), "running": ("running", "")}
        if state in words:
            self.status_word, self.status_detail = words[state]

    def _on_retry(self, event: dict) -> None:
        self.notes.append(str(event.get("message", "Retrying.")))
        self.status_word, self.status_detail = "retrying", str(event.get("message", ""))

    def _on_fallback(self, event: dict) -> None:
        # backend "auto": Unsloth could not start, the supervisor restarted on the peft backend.
        self.notes.append(str(event.get("message", "Unsloth cannot start here; falling back to the peft backend.")))
        self.status_word, self.status_detail = "starting", "on the peft backend"

    def _on_error(self, event: dict) -> None:
        self.status_word, self.status_detail = "failed", str(event.get("message", ""))

    def _on_end(self, event: dict) -> None:
        self.ended, self.end_event = True, event
        self.status_word = str(event.get("status", "completed"))
        if isinstance(event.get("step"), (int, float)):
            self.step = int(event["step"])
        where = event.get("adapter_dir") or event.get("checkpoint")
        self.status_detail = f"at step {self.step}" + (f"; {where}" if where else "")


class ExampleScreen(ModalScreen[None]):
    """A rendered training example, exactly as the model sees it (the trained part between ▶ ◀)."""

    BINDINGS = [Binding("escape,q,enter", "dismiss", "Close", id="example.close")]
    DEFAULT_CSS = """
    ExampleScreen { align: center middle; }
    ExampleScreen > VerticalScroll { width: 90%; height: 80%; border: round $accent; padding: 1 2; background: $surface; }
    """

    def __init__(self, title: str, text: str):
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = self.title_text
            scroll.border_subtitle = "escape to close"
            yield Static(self.text, markup=False)

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(None)


class TrainingScreen(Screen):
    """Watch a run folder; fix what goes wrong with one key."""

    CSS_PATH = "../styles/training.tcss"
    BINDINGS = [
        Binding("s", "stop", "Stop", id="dashboard.stop"),
        Binding("p", "pause", "Pause/resume", id="dashboard.pause"),
        Binding("o", "open_folder", "Run folder", id="dashboard.folder"),
        # The finish screen again, once the run completed.
        Binding("f", "finish", "Finish", show=False, id="dashboard.finish"),
        Binding("escape", "back", "Back", id="dashboard.back"),
        Binding("1", "remedy(1)", "Remedy", key_display="1-9", id="dashboard.remedy1"),
        *[Binding(str(n), f"remedy({n})", f"Remedy {n}", show=False, id=f"dashboard.remedy{n}") for n in range(2, 10)],
    ]

    class RunFinished(Message):
        """The run ended (completed or stopped). The app shows the finish screen from this."""

        def __init__(self, run_dir: Path, status: str, event: dict):
            super().__init__()
            self.run_dir, self.status, self.event = run_dir, status, event

    class SessionChanged(Message):
        """A remedy changed and saved the session; the wizard can take it as its session in progress."""

        def __init__(self, session, path: Path, remedy: dict):
            super().__init__()
            self.session, self.path, self.remedy = session, path, remedy

    def __init__(
        self,
        run_dir: str | Path,
        *,
        probe_system: bool = True,
        launch: Optional[Callable] = None,
        name: Optional[str] = None,
    ):
        """`probe_system`: poll GPU/worker memory and whether the worker lives (off for recorded
        runs in tests, whose numbers must not depend on this machine). `launch`: how a remedy starts
        the run again; `engine.runs.launch` unless given."""
        super().__init__(name=name)
        self.run_dir = Path(run_dir).expanduser()
        self.tail = EventTail(self.run_dir / EVENTS_FILE)
        self.view = RunView()
        self.probe_system = probe_system
        self._launch = launch
        self._memory = "-"
        self._finished_posted = False
        self._shown_findings: list = []
        self._shown_notes: list = []
        self._busy = False
        # The events file is read by a worker thread on each tick, and synchronously on mount and
        # after a restart. Reading and queueing happen under one lock, so events reach the view in
        # file order whoever read them.
        self._read_lock = threading.Lock()
        self._pending: list[dict] = []
        self._fresh_view = False  # the file was replaced: start the view again before the queue

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="dash-top"):
            yield LossChart(id="loss-chart")
            yield StatPanel(id="stat-panel")
        yield FindingsPanel(id="findings")
        yield LogTail(self.run_dir / "worker.log", id="log-tail")
        yield StableFooter()

    def on_mount(self) -> None:
        self.sub_title = str(self.run_dir)
        self.refresh_from_events()
        self.set_interval(TICK_SECONDS, self._tick, name="events")
        if self.probe_system:
            self.poll_memory()
            self.set_interval(MEMORY_POLL_SECONDS, self.poll_memory, name="memory")

    # -- the tick -------------------------------------------------------------------------------
    _reading = False

    def _tick(self) -> None:
        # Reading and parsing JSON lines is the part of a tick that grows with a fast run's event
        # rate, so it happens in a thread; folding into the view and redrawing stay here, once.
        # A backlog (opening a long run) is folded MAX_EVENTS_PER_TICK at a time, so no tick is long.
        if not self._read_lock.acquire(blocking=False):
            return  # a read is queueing events right now: the next tick folds them
        try:
            batch = self._take_pending(MAX_EVENTS_PER_TICK)
        finally:
            self._read_lock.release()
        if batch:
            self._update(batch)
        elif not self._reading:
            self._reading = True
            self._read_in_thread(self.app)

    def _read_new_events(self) -> None:
        """Queue what the file gained since the last read (the caller holds the read lock)."""
        if self._events_file_shrank():  # replaced by a shorter file: read it from the start
            self.tail, self._pending, self._fresh_view = EventTail(self.run_dir / EVENTS_FILE), [], True
        self._pending.extend(self.tail.read_new())

    def _take_pending(self, limit: Optional[int] = None) -> list[dict]:
        """Up to `limit` queued events, oldest first (the caller holds the read lock)."""
        if self._fresh_view:
            self.view, self._fresh_view = RunView(), False
        count = len(self._pending) if limit is None else limit
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    @work(thread=True, group="events")
    def _read_in_thread(self, app) -> None:
        # `app` comes from the event loop: `self.app` is not reliable in a thread once it closes.
        try:
            with self._read_lock:
                self._read_new_events()
        except Exception:
            pass  # an unreadable file now is read again on the next tick
        try:
            app.call_from_thread(self._after_read)
        except RuntimeError:  # NoActiveAppError too: the app closed while this read was in flight
            pass

    def _after_read(self) -> None:
        self._reading = False
        self._tick()

    def refresh_from_events(self) -> None:
        """Read and fold whatever arrived, then redraw once (synchronous: on mount and in tests)."""
        with self._read_lock:  # waits for a read in flight: its events come first
            self._read_new_events()
            events = self._take_pending()
        self._update(events)

    def _update(self, events: list[dict]) -> None:
        changed = False
        for event in events:
            self.view.apply(event)
            changed = True
        self.query_one(LogTail).poll()
        if self.probe_system and self.view.status_word in ("running", "paused", "starting") and not self._worker_alive():
            self.view.status_word, self.view.status_detail = "interrupted", "the worker is gone; press a remedy key or resume from the run folder"
            changed = True
        if changed or not self._shown_once or self._memory != self._memory_shown:
            self._redraw()
        self._maybe_draw_chart()
        if not self.view.ended:
            self._finished_posted = False  # a new start: its end will be news again
        elif not self._finished_posted and not self._busy:
            # Not while a remedy restarts the run: that stop is a step on the way, not the finish.
            self._finished_posted = True
            self.post_message(self.RunFinished(self.run_dir, self.view.status_word, self.view.end_event or {}))

    _shown_once = False
    _memory_shown = "-"

    def _events_file_shrank(self) -> bool:
        try:
            return (self.run_dir / EVENTS_FILE).stat().st_size < self.tail._offset
        except OSError:
            return False

    def _redraw(self) -> None:
        self._shown_once = True
        view = self.view
        self._memory_shown = self._memory
        self.query_one(StatPanel).show(view, self._memory_line())
        # The findings panel rebuilds its children: only when what it shows has changed.
        if view.findings != self._shown_findings or view.notes != self._shown_notes:
            self._shown_findings, self._shown_notes = list(view.findings), list(view.notes)
            self.query_one(FindingsPanel).show(view.findings, view.notes)

    _chart_counts: tuple = (-1, -1)
    _chart_drawn_at = 0.0

    def _maybe_draw_chart(self) -> None:
        """The chart changes slowly and costs the most to draw: at most once per CHART_SECONDS."""
        counts = (len(self.view.train), len(self.view.evals), self.view.train[-1:] and self.view.train[-1][0])
        if counts == self._chart_counts:
            return
        now = time.monotonic()
        if now - self._chart_drawn_at < CHART_SECONDS and not self.view.ended:
            return
        self._chart_counts, self._chart_drawn_at = counts, now
        self.query_one(LossChart).show(self.view.train, self.view.evals)

    # -- memory and liveness ----------------------------------------------------------------------
    def _memory_line(self) -> str:
        if self._memory != "-":
            return self._memory
        if self.view.memory_gb is not None:
            return f"{self.view.memory_gb:.2f} GiB (worker)"
        return "-"

    @work(thread=True, exclusive=True, group="memory")
    def poll_memory(self) -> None:
        # NVML's init can take tens of milliseconds: never on the event loop.
        self._memory = memory_line(self.view.pid)

    def _worker_alive(self) -> bool:
        from engine.runs.registry import SUPERVISOR_PID_FILE, pid_alive

        if self.view.pid and pid_alive(self.view.pid):
            return True
        try:
            supervisor = int((self.run_dir / SUPERVISOR_PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return False
        return pid_alive(supervisor)

    # -- keys -----------------------------------------------------------------------------------
    def action_stop(self) -> None:
        from engine.runs.registry import request_resume, request_stop

        request_stop(self.run_dir)
        if self.view.status_word == "paused":
            request_resume(self.run_dir)  # a paused worker must run one more step to checkpoint
        self.notify("Stopping after this step: the worker saves a checkpoint, then ends.")

    def action_pause(self) -> None:
        from engine.runs.registry import PAUSE_FILE, request_pause, request_resume

        if (self.run_dir / PAUSE_FILE).exists() or self.view.status_word == "paused":
            request_resume(self.run_dir)
            self.notify("Resuming.")
        else:
            request_pause(self.run_dir)
            self.notify("Pausing after this step (the GPU memory stays allocated).")

    def action_open_folder(self) -> None:
        path = str(self.run_dir.resolve())
        self.app.copy_to_clipboard(path)
        self.notify(f"Run folder: {path} (copied to the clipboard)")

    def action_finish(self) -> None:
        if self.view.ended and self.view.status_word == "completed":
            self.post_message(self.RunFinished(self.run_dir, self.view.status_word, self.view.end_event or {}))

    def action_back(self) -> None:
        if self.view.running:
            self.notify("Training goes on in the background; lora-tui offers to re-attach when it starts.")
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

    def action_remedy(self, number: int) -> None:
        pairs = numbered_remedies(self.view.findings)
        if not 1 <= number <= len(pairs):
            self.notify(f"No remedy {number} is on offer.", severity="warning")
            return
        finding, remedy = pairs[number - 1]
        if not remedy.get("changes"):
            self._advise(remedy)
            return
        if self._busy:
            self.notify("A remedy is already being applied.", severity="warning")
            return
        self._busy = True
        self.apply_and_restart(remedy)

    def _advise(self, remedy: dict) -> None:
        if remedy.get("id") == "check_data":
            example = remedy.get("example") or self.view.example
            if example:
                self.app.push_screen(ExampleScreen("A training example as the model sees it (trained part ▶ ◀)", example))
                return
            self.notify("No rendered example in this run's events; run `lora-tui --replay SESSION --dry-run` to see some.")
            return
        self.notify(remedy.get("label", "Advice"), title="Advice", timeout=10)

    @work(thread=True, exclusive=True, group="remedy")
    def apply_and_restart(self, remedy: dict) -> None:
        """Off the event loop: stopping the old run can take a step and a checkpoint."""
        try:
            message = self._apply_and_restart(remedy)
            self.app.call_from_thread(self.notify, message, title="Remedy applied", timeout=10)
        except Exception as error:  # one sentence on screen, never a traceback
            from tui.screens.base import explain

            self.app.call_from_thread(self.notify, explain(error), severity="error", timeout=15)
        finally:
            self.app.call_from_thread(self._remedy_done)

    def _remedy_done(self) -> None:
        # Events of the stopped run are read by now; its end must not count as the finish.
        self.refresh_from_events()
        if self.view.ended:
            self._finished_posted = True
        self._busy = False

    def _apply_and_restart(self, remedy: dict) -> str:
        from engine.runs.registry import last_checkpoint, request_resume, request_stop, run_state
        from engine.session.schema import load_session, save_session
        from engine.troubleshooting.remedies import apply_remedy

        session_path = self.run_dir / "session.json"
        session = apply_remedy(load_session(session_path), remedy)
        save_session(session, session_path)
        self.app.call_from_thread(self.post_message, self.SessionChanged(session, session_path, remedy))

        state = run_state(self.run_dir)
        if state.status in ("running", "paused"):
            request_stop(self.run_dir)
            request_resume(self.run_dir)
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while run_state(self.run_dir).status in ("running", "paused"):
                if time.monotonic() > deadline:
                    return f"Saved: {remedy['label']}. The old run has not stopped yet; start it again once it has."
                time.sleep(0.5)

        checkpoint = last_checkpoint(self.run_dir)
        resume = remedy.get("restart") == "resume" and checkpoint is not None
        launch = self._launch
        if launch is None:
            from engine.runs.registry import launch
        launch(session, resume=resume)
        how = f"resumed from {checkpoint.name}" if resume else "restarted from the beginning"
        return f"{remedy['label']}: session saved, run {how}."


def memory_line(pid: Optional[int]) -> str:
    """GPU memory used / total through NVML (the planner's engine.planner.hardware, whose
    $LORA_TUI_HARDWARE seam also applies here) where a GPU is, else the worker's RSS."""
    try:
        from engine.planner.hardware import probe_hardware

        gpus = probe_hardware().gpus
    except Exception:
        gpus = []
    if gpus:
        gpu = gpus[0]  # training uses the first GPU
        return f"{gpu.used_gb:.1f} / {gpu.total_gb:.0f} GiB {gpu.name}"
    if not pid:
        return "-"
    try:
        import psutil

        process = psutil.Process(pid)
        rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
        total = psutil.virtual_memory().total
        return f"{rss / 2**30:.2f} / {total / 2**30:.0f} GiB RAM"
    except Exception:
        return "-"
