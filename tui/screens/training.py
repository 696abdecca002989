"""The training dashboard: a run folder's events, live, with the troubleshooting panel.

The screen only reads. Twice a second it looks at the size of `events.jsonl` (one stat() when
nothing changed: watching costs next to nothing); when the file grew it reads the new lines,
folds them into the engine's `RunProgress`, and redraws only the parts whose figures changed.
Training runs in its own process (see `engine.runs.registry`); leaving this screen leaves it
running. A remedy key applies the remedy to the run's session, saves it, and restarts or resumes
the run. The run's state, step and ETA stay docked at the top at any terminal size.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
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
from engine.runs.progress import RunProgress
from tui.screens.base import BackgroundWork, explain
from tui.widgets.findings_panel import FindingsPanel, numbered_remedies
from tui.widgets.footer import StableFooter
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_state_bar import RunStateBar
from tui.widgets.stat_panel import StatPanel

SYNC_BACKLOG_BYTES = 1 << 20  # a smaller events file is read at once on opening; a bigger one in a thread
POLL_SECONDS = 0.5  # how often the events file's size is looked at: one stat() when nothing changed
LIVENESS_SECONDS = 2.0  # how often a live-looking run's processes are checked
CHART_SECONDS = 2.0  # the loss chart and the sparklines: the costliest to draw, and they change slowly
MEMORY_POLL_SECONDS = 2.0
STAT_LABEL = 11  # the stat panel's label column
EACH_GPU_UP_TO = 4  # more GPUs read better as a range than as a list of numbers
MEMORY_WIDTH = 23  # its value column at 80 columns (38 wide, less border, padding and label): one row
STOP_WAIT_SECONDS = 300.0  # how long a remedy waits for the old run to checkpoint and end


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


class TrainingScreen(BackgroundWork, Screen):
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
        """A remedy changed and saved the run's session; the wizard takes it as its session in progress."""

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
        the run again; `engine.runs.registry.launch` unless given."""
        super().__init__(name=name)
        self.run_dir = Path(run_dir).expanduser()
        self.tail = EventTail(self.run_dir / EVENTS_FILE)
        self.view = RunProgress()
        self.probe_system = probe_system
        self._launch = launch
        self._memory: list | str = "-"  # this node's GPUs the run uses (GPUInfo), or a line
        self._nnodes: Optional[int] = None  # from the run's session.json, read once
        self._finished_posted = False
        self._poll_timers: list = []  # paused while another screen covers this one
        self._shown_findings: list = []
        self._shown_notes: list = []
        self._shown_stats: tuple = ()
        self._busy = False
        self._requested = ""  # "stopping" / "pausing" / "resuming": shown at once, until the events say it
        self._liveness_at = 0.0
        self._gone = False  # the events say running, but no process of the run is alive
        self._backlog_read = False

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunStateBar(self.run_dir, id="run-state")
        with Horizontal(id="dash-top"):
            yield LossChart(id="loss-chart")
            yield StatPanel(id="stat-panel")
        yield FindingsPanel(id="findings")
        yield LogTail(self.run_dir / "worker.log", id="log-tail")
        yield StableFooter()

    def on_mount(self) -> None:
        self.sub_title = str(self.run_dir)
        try:
            size = os.stat(self.run_dir / EVENTS_FILE).st_size
        except OSError:
            size = 0
        if size > SYNC_BACKLOG_BYTES:
            self.read_backlog()  # a long run's file is megabytes: read it off the event loop, once
        else:
            self.backlog_done(list(self.tail.read_new()))
        if self.probe_system:
            self.poll_memory()
            self._poll_timers.append(self.set_interval(MEMORY_POLL_SECONDS, self.poll_memory, name="memory"))

    def on_screen_suspend(self) -> None:
        # Under the finish screen or a dialog nothing here is seen: polling would cost CPU for nothing.
        for timer in self._poll_timers:
            timer.pause()

    def on_screen_resume(self) -> None:
        for timer in self._poll_timers:
            timer.resume()

    def on_resize(self, event) -> None:
        # No media queries in Textual CSS: a class lets the stylesheet give the chart room at 80x24.
        self.set_class(self.size.height < 32, "-short")

    # -- reading the events ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="backlog", exit_on_error=False)
    def read_backlog(self) -> list[dict]:
        return list(self.tail.read_new())

    def backlog_done(self, events: list[dict]) -> None:
        self._backlog_read = True
        self._update(events)
        self._poll_timers.append(self.set_interval(POLL_SECONDS, self.poll_events, name="events"))

    def backlog_failed(self, error: BaseException) -> None:
        self.notify(explain(error), severity="error")
        self.backlog_done([])

    def poll_events(self) -> None:
        """On the timer: read only when the file changed; check the processes now and then."""
        if not self._backlog_read:
            return  # the backlog's arrival shows everything up to now
        try:
            size = os.stat(self.run_dir / EVENTS_FILE).st_size
        except OSError:
            size = 0
        events: list[dict] = []
        if size < self.tail.offset:  # replaced by a shorter file (a fresh run): read it from the start
            self.tail, self.view = EventTail(self.run_dir / EVENTS_FILE), RunProgress()
            self._shown_stats = ()
        if size != self.tail.offset:
            events = list(self.tail.read_new())
        self._update(events)

    def refresh_from_events(self) -> None:
        """Read and fold whatever arrived, then redraw (synchronous: after a remedy, and in tests)."""
        self.poll_events()

    def _update(self, events: list[dict]) -> None:
        self.view.fold(events)
        if events and self.view.ended:
            self._requested = ""
        self.query_one(LogTail).poll()
        self._check_liveness()
        self._redraw()
        self._maybe_draw_chart()
        if not self.view.ended:
            self._finished_posted = False  # a new start: its end will be news again
        elif not self._finished_posted and not self._busy:
            # Not while a remedy restarts the run: that stop is a step on the way, not the finish.
            self._finished_posted = True
            self.post_message(self.RunFinished(self.run_dir, self.view.status_word, self.view.end_event or {}))

    def _check_liveness(self) -> None:
        """Whether a run whose events say "running" still has its processes: checked every few
        seconds, on this machine only (another host's pids mean nothing here)."""
        if not self.probe_system or not self._controls_here():
            return
        now = time.monotonic()
        if now - self._liveness_at < LIVENESS_SECONDS:
            return
        self._liveness_at = now
        self._gone = self.view.status_word in ("running", "paused", "starting") and not self._worker_alive()

    def _redraw(self) -> None:
        """Each part redraws only when what it shows has changed: an idle screen draws nothing."""
        view = self.view
        stats = (view.events_seen, view.status_word, view.status_detail, self._memory, self._requested, self._gone,
                 self._memory_width())
        if stats != self._shown_stats:
            self._shown_stats = stats
            self.query_one(RunStateBar).show(view, self._requested, self._controls_here(), gone=self._gone)
            self.query_one(StatPanel).show(view, self._memory_line())
        if view.findings != self._shown_findings or view.notes != self._shown_notes:
            self._shown_findings, self._shown_notes = list(view.findings), list(view.notes)
            self.query_one(FindingsPanel).show(view.findings, view.notes)

    _chart_counts: tuple = (-1, -1)
    _chart_drawn_at = 0.0

    def _maybe_draw_chart(self) -> None:
        """The chart changes slowly and costs the most to draw: at most once per CHART_SECONDS."""
        counts = (len(self.view.train), len(self.view.evals), len(self.view.grad_norms))
        if counts == self._chart_counts:
            return
        now = time.monotonic()
        if now - self._chart_drawn_at < CHART_SECONDS and not self.view.ended:
            return
        self._chart_counts, self._chart_drawn_at = counts, now
        self.query_one(LossChart).show(self.view.train, self.view.evals)
        self.query_one(StatPanel).show_trends(self.view)

    # -- memory and liveness ----------------------------------------------------------------------
    def _memory_line(self) -> str:
        width = self._memory_width()
        if isinstance(self._memory, list):
            return gpu_memory_text(self._memory, width)
        if self._memory != "-":
            return self._memory
        if len(self.view.memory_gb_ranks) > 1:
            return ranks_memory_text(self.view.memory_gb_ranks, width)
        if self.view.memory_gb is not None:
            return f"{self.view.memory_gb:.2f} GiB (worker)"
        return "-"

    def _memory_width(self) -> int:
        """Characters the stat panel has for the memory value now (MEMORY_WIDTH before layout)."""
        try:
            room = self.query_one("#stats", Static).content_size.width - STAT_LABEL
        except Exception:
            return MEMORY_WIDTH
        return room if room > 0 else MEMORY_WIDTH

    @work(thread=True, exclusive=True, group="memory", exit_on_error=False)
    def poll_memory(self) -> list | str:
        # NVML's init can take tens of milliseconds: never on the event loop. The readings come
        # back unformatted: the line is fitted to the panel's width when drawn.
        if not self.view.live:
            return self._memory
        if not self._controls_here():
            return "-"  # this machine's GPUs are not the run's: the worker's own figures instead
        return local_memory(self.view.pid, self._local_processes())

    def _local_processes(self) -> int:
        """Processes of the run on this node: world size over the session's nodes."""
        if self._nnodes is None:
            try:
                data = json.loads((self.run_dir / "session.json").read_text(encoding="utf-8"))
                self._nnodes = max(int(data.get("distributed", {}).get("nnodes", 1)), 1)
            except (OSError, ValueError, TypeError, AttributeError):
                self._nnodes = 1
        return max(self.view.world_size // self._nnodes, 1)

    def memory_done(self, reading: list | str) -> None:
        if reading != self._memory:
            self._memory = reading
            self._redraw()

    def _worker_alive(self) -> bool:
        from engine.runs.registry import SUPERVISOR_PID_FILE, pid_alive

        if self.view.pid and pid_alive(self.view.pid):
            return True
        try:
            supervisor = int((self.run_dir / SUPERVISOR_PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return False
        return pid_alive(supervisor)

    def _controls_here(self) -> bool:
        """Remedies launch the run again on this machine: only where it was started."""
        return not self.view.host or self.view.host == socket.gethostname()

    # -- keys -----------------------------------------------------------------------------------
    def _show_request(self, word: str) -> None:
        self._requested = word
        self._redraw()

    def action_stop(self) -> None:
        from engine.runs.registry import request_resume, request_stop

        if not self.view.live:
            self.notify(f"The run is not going ({self.view.status_word}).")
            return
        request_stop(self.run_dir)
        if self.view.status_word == "paused":
            request_resume(self.run_dir)  # a paused worker must run one more step to checkpoint
        self._show_request("stopping")
        self.notify(f"Stopping after step {self.view.step + 1}: the worker saves a checkpoint, then ends.")

    def action_pause(self) -> None:
        from engine.runs.registry import PAUSE_FILE, request_pause, request_resume

        if not self.view.live:
            self.notify(f"The run is not going ({self.view.status_word}).")
            return
        if (self.run_dir / PAUSE_FILE).exists() or self.view.status_word == "paused":
            request_resume(self.run_dir)
            self._show_request("resuming")
            self.notify("Resuming.")
        else:
            request_pause(self.run_dir)
            self._show_request("pausing")
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
            self.notify("Training goes on in the background; `lora-tui attach` or `lora-tui` re-attaches to it.")
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
        if not self._controls_here():
            self.notify(f"This run was started on {self.view.host}: apply remedies there (it restarts the run).",
                        severity="warning", timeout=10)
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

    @work(thread=True, exclusive=True, group="remedy", exit_on_error=False)
    def apply_and_restart(self, remedy: dict) -> tuple:
        """Off the event loop: stopping the old run can take a step and a checkpoint."""
        from engine.session.schema import load_session, save_session
        from engine.troubleshooting.remedies import apply_remedy

        session_path = self.run_dir / "session.json"
        session = apply_remedy(load_session(session_path), remedy)
        save_session(session, session_path)
        return session, session_path, remedy, self._restart(session, remedy)

    def remedy_done(self, result: tuple) -> None:
        session, session_path, remedy, message = result
        self.post_message(self.SessionChanged(session, session_path, remedy))
        self.notify(message, title="Remedy applied", timeout=10)
        self._remedy_over()

    def remedy_failed(self, error: BaseException) -> None:
        self.notify(explain(error), severity="error", timeout=15)  # one sentence, never a traceback
        self._remedy_over()

    def _remedy_over(self) -> None:
        # Events of the stopped run are read by now; its end must not count as the finish.
        self.refresh_from_events()
        if self.view.ended:
            self._finished_posted = True
        self._busy = False

    def _restart(self, session, remedy: dict) -> str:
        from engine.runs.registry import last_checkpoint, request_resume, request_stop, run_state

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


def local_gpus(count: int) -> list:
    """The GPUs of this node a run of `count` local processes uses: one each, in the order
    CUDA_VISIBLE_DEVICES gives (NVML numbers GPUs regardless of it), capped at the GPUs seen."""
    try:
        from engine.planner.hardware import probe_hardware

        gpus = probe_hardware().gpus
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(" ", "")
    if visible and all(part.isdigit() for part in visible.split(",")):
        by_index = {gpu.index: gpu for gpu in gpus}
        gpus = [by_index[int(part)] for part in visible.split(",") if int(part) in by_index] or gpus
    return gpus[: max(count, 1)]


def local_memory(pid: Optional[int], count: int = 1) -> list | str:
    """This node's GPUs the run uses (a list, formatted when drawn), else the worker's RSS line."""
    return local_gpus(count) or rss_line(pid)


def memory_line(pid: Optional[int], count: int = 1, width: int = MEMORY_WIDTH) -> str:
    """GPU memory used / total through NVML (the planner's engine.planner.hardware, whose
    $LORA_TUI_HARDWARE seam also applies here) for the `count` GPUs a run uses on this node, in
    at most `width` characters; on a CPU the worker's RSS."""
    reading = local_memory(pid, count)
    return gpu_memory_text(reading, width) if isinstance(reading, list) else reading


def rss_line(pid: Optional[int]) -> str:
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


def gpu_memory_text(gpus: list, width: int = MEMORY_WIDTH) -> str:
    """The most detailed of a few forms that fits `width` (a wrapped row would push the last stat
    out of the panel): "GPU0 10.2 · GPU1 9.8 / 24 GiB RTX 4090", "10.2 · 9.8 / 24 GiB",
    "8× 9.8-10.4 / 80 GiB"."""
    used = [_gib(gpu.used_gb) for gpu in gpus]
    names = [short_gpu_name(gpu.name) for gpu in gpus]
    totals = [f"{gpu.total_gb:.0f}" for gpu in gpus]
    span = _span([gpu.used_gb for gpu in gpus])
    count = len(gpus)
    if len(set(zip(names, totals))) == 1:  # one model: its size and name once
        total, name = f"{totals[0]} GiB", names[0]
        if count == 1:
            forms = [f"{used[0]} / {total} {name}", f"{used[0]} / {total}"]
        else:
            each = " · ".join(f"GPU{gpu.index} {u}" for gpu, u in zip(gpus, used))
            forms = [f"{each} / {total} {name}", f"{' · '.join(used)} / {total} {name}",
                     f"{' · '.join(used)} / {total}"] if count <= EACH_GPU_UP_TO else []
            forms += [f"{count} GPUs {span} / {total} {name}", f"{count} GPUs {span} / {total}", f"{count}× {span} / {total}"]
    else:
        forms = [" · ".join(f"{u} / {t} GiB {n}" for u, t, n in zip(used, totals, names)),
                 " · ".join(f"{u}/{t}" for u, t in zip(used, totals)) + " GiB"] if count <= EACH_GPU_UP_TO else []
        forms += [f"{count} GPUs {span} GiB used", f"{count}× {span} GiB"]
    return next((form for form in forms if len(form) <= width), forms[-1])


def ranks_memory_text(ranks: list[float], width: int = MEMORY_WIDTH) -> str:
    """The worker's own per-process peaks (no NVML reading here): "10.2 · 9.8 GiB (ranks)"."""
    forms = [f"{' · '.join(_gib(r) for r in ranks)} GiB (ranks)", f"{len(ranks)} ranks {_span(ranks)} GiB",
             f"{len(ranks)}× {_span(ranks)} GiB"]
    return next((form for form in forms if len(form) <= width), forms[-1])


def short_gpu_name(name: str) -> str:
    """NVML's name less the vendor's words ("RTX 4090" for "NVIDIA GeForce RTX 4090"): the panel is
    narrow. Not the catalogue's name: it counts a 3090 Ti as a 3090."""
    return " ".join(word for word in name.split() if word.lower() not in ("nvidia", "geforce", "tesla")) or name


def _gib(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _span(values: list[float]) -> str:
    low, high = _gib(min(values)), _gib(max(values))
    return low if low == high else f"{low}-{high}"
