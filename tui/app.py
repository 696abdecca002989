"""The wizard: seven steps from the hardware to a ready session, saved as you go.

Start-up stays light (no torch, transformers or Unsloth here): the engine's heavy calls run in
worker threads, on demand, and are cached on the app so that every step shares one answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message

from engine.paths import state_dir
from engine.session.draft import STEPS, WizardDraft, fresh_session_data, load_draft, save_draft
from tui.commands import WizardCommands
from tui.screens.base import BackgroundWork

if TYPE_CHECKING:
    from engine.session.schema import Session

log = logging.getLogger("lora_tui.wizard")


@dataclass(frozen=True)
class Budget:
    """The memory a plan must fit in: a GPU's VRAM, or RAM when training on the CPU."""

    label: str  # "RTX 4090" / "CPU (RAM)"
    gb: Optional[float]
    kind: str  # "VRAM" | "RAM"
    planned: bool  # True when planning for hardware that is not this machine's
    gpus: int = 1  # GPUs a node the run uses (the session's distributed.nproc_per_node)
    nodes: int = 1  # nodes (distributed.nnodes)
    ram_gb: Optional[float] = None  # a node's available RAM, for FSDP's CPU offload; None when planned

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes if self.kind == "VRAM" else 1


class SessionEdited(Message):
    """The session in progress changed; `changes` are the dotted fields (or sections) that moved."""

    def __init__(self, changes: dict[str, Any]) -> None:
        super().__init__()
        self.changes = changes


# step -> (module under tui.screens, class); a step's module is imported when it is first shown,
# so the first screen does not wait for the other six.
_STEP_SCREENS = {
    "hardware": ("hardware", "HardwareScreen"),
    "model": ("model", "ModelScreen"),
    "method": ("method", "MethodScreen"),
    "target_modules": ("target_modules", "TargetModulesScreen"),
    "dataset": ("dataset", "DatasetScreen"),
    "hyperparameters": ("hyperparameters", "HyperparametersScreen"),
    "review": ("review", "ReviewScreen"),
}


def _screen_class(step: str):
    import importlib

    module, name = _STEP_SCREENS[step]
    return getattr(importlib.import_module(f"tui.screens.{module}"), name)


class LoraTuiApp(BackgroundWork, App[int]):
    CSS_PATH = "styles/app.tcss"
    TITLE = "lora-tui"
    COMMANDS = App.COMMANDS | {WizardCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("ctrl+s", "save", "Save", id="wizard.save", priority=True),
    ]

    def __init__(self, draft: WizardDraft, resume_offer: Optional[WizardDraft] = None, autosave: bool = True,
                 offer_runs: bool = False):
        super().__init__()
        self.draft = draft
        self.resume_offer = resume_offer
        self.offer_runs = offer_runs
        self.autosave_enabled = autosave
        self._cache: dict[tuple, Any] = {}
        self._cache_lock = threading.Lock()
        # transformers' lazy module is not safe to import from two threads at once ("cannot import
        # name AutoTokenizer"): workers that may import torch / transformers take turns.
        self.heavy_lock = threading.RLock()
        self.current_step: Optional[str] = None
        self._saved_json = ""

    # -- the session in progress ---------------------------------------------------------------
    @property
    def session(self) -> Session:
        return self.draft.session

    def edit_session(self, changes: dict[str, Any], where: str = "session") -> Session:
        """The one way a screen changes the session: validated (`Session.with_changes`), kept in
        the draft, and announced with `SessionEdited` so any screen showing it can follow. A bad
        value raises `SessionError` naming the field, and the session stays as it was."""
        edited = self.draft.session.with_changes(changes, where=where)
        if edited != self.draft.session:
            self.draft.session = edited
            self.post_message(SessionEdited(changes))
        return edited

    def autosave(self) -> None:
        # While "continue where you left off?" is unanswered, the old draft on disk is the
        # person's work: a fresh draft must not overwrite it (not even on ctrl+q).
        if not self.autosave_enabled or self.resume_offer is not None:
            return
        try:
            save_draft(self.draft)
            self._saved_json = self.draft.session.to_json()
        except OSError as exc:
            self.notify(f"Could not save the session in progress to {state_dir()}: {exc}.", severity="error")

    def action_save(self) -> None:
        screen = self.screen
        if hasattr(screen, "commit"):
            screen.commit(strict=False)
        self.autosave()
        if hasattr(screen, "save_session_file"):
            screen.save_session_file()
        else:
            self.notify(f"Saved the session in progress ({state_dir() / 'last_session.json'}).")

    def _autosave_if_changed(self) -> None:
        if self.draft.session.to_json() != self._saved_json:
            self.autosave()

    def apply_preset(self, name: str) -> None:
        """Palette entry: open the hyperparameters step with a preset applied."""
        self.goto("hyperparameters", check=False)
        screen = self.get_screen("hyperparameters")
        self.call_after_refresh(screen.apply_named_preset, name)

    async def action_quit(self) -> None:
        screen = self.screen
        if hasattr(screen, "commit"):
            screen.commit(strict=False)
        self.autosave()
        self.exit(0)

    # -- navigation ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from tui.keymap import load_keymap

        keymap, problem = load_keymap()
        if keymap:
            self.set_keymap(keymap)
        if problem:
            self.notify(problem, severity="warning", timeout=10)
        self.goto(self.draft.step if self.draft.step in STEPS else STEPS[0], check=False)
        # Between steps too: a dropped SSH connection loses at most a few seconds of typing.
        self.set_interval(10, self._autosave_if_changed)
        # The first screen is drawn before anything else: the start-up questions, and the schema
        # they need, come right after it.
        self.call_after_refresh(self.prepare_startup)

    # -- start-up questions: runs to re-attach to, then the session in progress ------------------
    @work(thread=True, group="startup", exit_on_error=False)
    def prepare_startup(self) -> tuple[list, Optional[WizardDraft]]:
        import engine.session.schema  # noqa: F401  (imported here, off the UI thread, before the first edit needs it)

        runs: list = []
        if self.offer_runs:
            try:
                from engine.runs.registry import list_runs

                runs = list_runs()
            except Exception as error:  # an unreadable registry must not stop the wizard
                log.warning("could not list runs: %s", error)
        offer = self.resume_offer
        if offer is not None and not offer.validated:
            from engine.errors import SessionError

            try:
                offer.session  # noqa: B018  (validates the saved draft)
            except SessionError as error:  # an older schema: start fresh rather than ask
                log.info("not offering the saved draft: %s", error)
                offer = None
        return runs, offer

    def startup_done(self, result: tuple[list, Optional[WizardDraft]]) -> None:
        runs, self.resume_offer = result
        self._offer_runs(runs)

    def _offer_runs(self, runs: list) -> None:
        if not runs:
            self._offer_resume()
            return
        from tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen(runs), self._runs_answered)

    def _runs_answered(self, answer) -> None:
        if answer is None:
            self._offer_resume()
            return
        what, run_dir = answer
        if what == "resume":
            self.resume_run(run_dir)
        else:
            self.watch_run(run_dir)

    def _offer_resume(self) -> None:
        if self.resume_offer is not None:
            from tui.screens.resume import ResumeScreen

            self.push_screen(ResumeScreen(self.resume_offer), self._resume_answered)

    def _resume_answered(self, answer: Optional[str]) -> None:
        offer, self.resume_offer = self.resume_offer, None
        if answer == "continue" and offer is not None:
            self.draft.session = offer.session
            self.draft.plan_gpu, self.draft.plan_vram_gb = offer.plan_gpu, offer.plan_vram_gb
            self.draft.extra = dict(offer.extra)
            self._refresh_installed()
            self.goto(offer.step, check=False)

    # -- runs --------------------------------------------------------------------------------------
    def watch_run(self, run_dir) -> None:
        """The dashboard of a run folder (the training engineer's screen), if this build has it."""
        try:
            from tui.screens.training import TrainingScreen
        except ImportError:
            self.notify(f"Training runs in the background in {run_dir}; the dashboard is not available in this build.", timeout=10)
            return
        self.push_screen(TrainingScreen(Path(run_dir)))

    def on_training_screen_run_finished(self, message) -> None:
        """A run completed: its finish screen over the dashboard (escape goes back to the chart)."""
        if message.status == "completed":
            from tui.screens.finish import FinishScreen

            self.push_screen(FinishScreen(message.run_dir))

    def on_training_screen_session_changed(self, message) -> None:
        """A remedy changed the run's session: the wizard goes on from that session, not the old one
        (so going back and training again keeps the fix)."""
        self.draft.session = message.session  # already validated and saved by the remedy
        self.autosave()
        self._refresh_installed()

    @work(thread=True, group="launch", exit_on_error=False)
    def resume_run(self, run_dir) -> Path:
        from engine.runs.registry import launch
        from engine.session.schema import load_session

        return launch(load_session(Path(run_dir) / "session.json"), resume=True).run_dir

    def launch_done(self, run_dir: Path) -> None:
        self.watch_run(run_dir)

    def _refresh_installed(self) -> None:
        """Drop kept step screens so they rebuild from a session that was replaced wholesale."""
        for step in STEPS:
            if self.is_screen_installed(step) and self.screen is not self.get_screen(step):
                self.uninstall_screen(step)

    def goto(self, step: str, check: bool = True) -> None:
        """Show `step`. Moving forward with `check` needs the current step to be complete."""
        current = self.screen
        if self.current_step is not None and hasattr(current, "commit"):
            forward = STEPS.index(step) > STEPS.index(self.current_step)
            problem = current.commit(strict=check and forward)
            if problem:
                current.say(problem, error=True)
                self.bell()
                return
        first = self.current_step is None
        self.draft.step = step
        if not first:  # the step shown at start is where the draft already stood
            self.autosave()
        if not self.is_screen_installed(step):
            self.install_screen(_screen_class(step)(), name=step)
        self.current_step = step
        while len(self.screen_stack) > 1 and self.screen.is_modal:
            self.pop_screen()
        if first:
            self.push_screen(step)  # over the default screen, which cannot be switched away
        else:
            self.switch_screen(step)

    def go_next(self) -> None:
        index = STEPS.index(self.current_step or STEPS[0])
        if index + 1 < len(STEPS):
            self.goto(STEPS[index + 1])

    def go_back(self) -> None:
        index = STEPS.index(self.current_step or STEPS[0])
        if index > 0:
            self.goto(STEPS[index - 1], check=False)

    # -- the engine, cached (these run in worker threads) ----------------------------------------
    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._cache_lock:
            self._cache[key] = value
        return value

    def hardware(self):
        def probe():
            from engine.planner.hardware import probe_hardware

            return probe_hardware()

        return self.cached(("hardware",), probe)

    def budget(self) -> Budget:
        """What the plan must fit: the planned GPU, else this machine's first GPU, else RAM; on
        the session's distributed.nproc_per_node GPUs a node ("auto": all of them) and nnodes nodes."""
        found = self.hardware()
        gpu, vram = self.draft.plan_gpu, self.draft.plan_vram_gb
        spread = self.draft.session.distributed
        nodes = spread.nnodes
        if gpu or vram:
            from engine.planner.hardware import planned_hardware

            planned = self.cached(("planned", gpu, vram), lambda: planned_hardware(gpu=gpu, vram_gb=vram, base=found))
            if planned.gpus:
                first = planned.gpus[0]
                gpus = spread.nproc_per_node if isinstance(spread.nproc_per_node, int) else 1
                return Budget(first.name, first.total_gb, "VRAM", True, gpus, nodes)
        if found.gpus:
            first = found.gpus[0]
            gpus = spread.nproc_per_node if isinstance(spread.nproc_per_node, int) else len(found.gpus)
            return Budget(first.name, first.total_gb, "VRAM", False, min(gpus, len(found.gpus)), nodes,
                          found.ram_available_gb or None)
        return Budget("CPU (RAM)", found.ram_available_gb, "RAM", False)

    def model_info(self, name: str):
        def inspect():
            with self.heavy_lock:
                from engine.planner.architecture import inspect_model

                return inspect_model(name)

        return self.cached(("model", name), inspect)

    def known_hardware(self):
        """The probed hardware if the probe has run, without probing."""
        with self._cache_lock:
            return self._cache.get(("hardware",))

    def known_model_info(self, name: str):
        """The inspection result if it is already cached, without computing it."""
        with self._cache_lock:
            return self._cache.get(("model", name))


def _setup_log() -> None:
    """Tracebacks of unexpected errors go to a file, never onto the screen."""
    try:
        path = state_dir() / "wizard.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("lora_tui")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def build_app(
    session_path: Optional[str] = None,
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    gpu: Optional[str] = None,
    vram_gb: Optional[float] = None,
    offer_resume: bool = True,
    autosave: bool = True,
) -> LoraTuiApp:
    """The app for the command line's arguments (a session file, or a model / dataset to start)."""
    if vram_gb is not None and vram_gb <= 0:
        from engine.errors import UserError

        raise UserError(f"--vram {vram_gb:g}: give the GPU memory in GB as a positive number, such as 24.")
    resume = None
    if session_path:
        # The method step would preselect its recommendation; a session file's choices stand instead.
        from engine.session.schema import load_session

        draft = WizardDraft(load_session(session_path), step="review", extra={"recommended_for": "session-file"})
    else:
        # As data: validated once the first screen is drawn (the schema import is not on that path).
        draft = WizardDraft(fresh_session_data(model=model, dataset=dataset))
        if offer_resume and not (model or dataset):
            resume = load_draft(validate=False)
    if model and session_path:
        draft.session = draft.session.with_changes({"model.name": model}, where="--model")
    draft.plan_gpu, draft.plan_vram_gb = gpu, vram_gb
    offer_runs = offer_resume and not (session_path or model or dataset)
    return LoraTuiApp(draft, resume_offer=resume, autosave=autosave, offer_runs=offer_runs)


def run_wizard(
    session_path: Optional[str] = None,
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    gpu: Optional[str] = None,
    vram_gb: Optional[float] = None,
) -> int:
    """The `lora-tui` wizard; returns the exit code."""
    if dataset and not Path(dataset).expanduser().exists():
        from engine.errors import DataError

        raise DataError(f"{dataset}: no such file or folder; give a JSON, JSONL, CSV or Parquet file.")
    _setup_log()
    app = build_app(session_path, model, dataset, gpu, vram_gb)
    result = app.run()
    return result if isinstance(result, int) else 0
