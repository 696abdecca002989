"""Step 7: the whole session, where it is saved, the command that replays it headless; train."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.syntax import Syntax
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.markup import escape
from textual.widgets import Checkbox, Input, Label, Static

from engine.session.edits import replay_command, run_name_for, session_for_file, shown_path
from engine.session.schema import save_session
from tui.screens.base import StepScreen, explain


class ReviewScreen(StepScreen):
    STEP = "review"
    AUTO_FOCUS = "#output-dir"
    HELP = "Everything the wizard decided, as the session file that reproduces it. Save it, or start training."
    BINDINGS = [
        Binding("ctrl+t", "train", "Train", id="review.train", priority=True),
    ]

    def compose_body(self) -> ComposeResult:
        session = self.wizard.session
        yield Static("", id="summary", classes="panel")
        default_dir = shown_path(session.output.dir)
        if default_dir == "runs/run":  # the schema's default: name the run after model and data
            default_dir = f"runs/{run_name_for(session)}"
        with Horizontal(classes="row"):
            yield Label("Run folder", classes="row-label")
            yield Input(default_dir, id="output-dir", compact=True)
        with Horizontal(classes="row"):
            yield Label("Session file", classes="row-label")
            yield Input(f"{run_name_for(session)}.session.json", id="session-file", compact=True)
        yield Checkbox("Also save a merged model (output.save_merged)", session.output.save_merged, id="save-merged", compact=True)
        with Horizontal(classes="row"):
            # output.on_finish (issue 20): off (empty) by default; never run after a failed or stopped run.
            yield Label("When finished", classes="row-label")
            yield Input(session.output.on_finish or "", id="on-finish", compact=True,
                        placeholder="a shell command run once after a successful run, e.g. sudo shutdown -h +10")
        yield Static("", id="replay", classes="panel replay")
        yield Static("", id="session-json", classes="panel")

    def on_mount(self) -> None:
        self.on_show_step()

    def on_show_step(self) -> None:
        self.commit(strict=False)
        self._render_session()

    def _summary(self) -> str:
        s = self.wizard.session
        t = s.training
        method = {"full": "Full fine-tune", "lora": "LoRA", "qlora": "QLoRA (4-bit)"}[s.method]
        adapter = f", r {s.lora.r}, alpha {s.lora.lora_alpha} on {len(s.lora.target_modules)} modules" if s.method != "full" else ""
        length = f"{t.max_steps} steps" if t.max_steps > 0 else f"{t.num_train_epochs:g} epoch(s)"
        data = Path(s.dataset.path).name if s.dataset.path else "no dataset yet"
        return (f"[b]{method}[/b]{adapter} · batch {t.per_device_train_batch_size} × {t.gradient_accumulation_steps} "
                f"· lr {t.learning_rate:g} · {length} · max_seq_length {s.model.max_seq_length} · backend {s.backend}\n"
                f"[b]Model[/b] {escape(s.model.name)}   [b]Data[/b] {escape(data)} ({s.dataset.template} template, "
                f"eval {s.dataset.eval_fraction:.0%})"
                + (f"\n[b]When finished[/b] runs [b]{escape(s.output.on_finish)}[/b] once (after a successful run only; "
                   "its output goes to the run's worker.log)" if s.output.on_finish else "")
                + (f"\n[b]Trackers[/b] {', '.join(t.trackers)}" if t.trackers else "")
                + self._processes())

    def _processes(self) -> str:
        """The `distributed` section in words, when it asks for more than one process (or for offload)."""
        d = self.wizard.session.distributed
        if d.strategy == "none" or (d.nproc_per_node == 1 and d.nnodes == 1 and not d.cpu_offload):
            return ""
        per_node = "every GPU" if d.nproc_per_node == "auto" else f"{d.nproc_per_node} process(es)"
        nodes = f" on each of {d.nnodes} nodes" if d.nnodes > 1 else " on this node"
        strategy = "DDP (strategy auto)" if d.strategy == "auto" else d.strategy.upper()
        offload = (" with CPU offload (the shards in RAM: every step copies each layer over PCIe)"
                   if d.cpu_offload else "")
        return f"\n[b]Processes[/b] {per_node}{nodes}, {strategy}{offload}"

    def _render_session(self) -> None:
        self.query_one("#summary", Static).update(self._summary())
        session_file = self.query_one("#session-file", Input).value.strip() or "session.json"
        replay = (f"Headless, same engine, same events:  [b]{escape(replay_command(session_file))}[/b]   "
                  f"(check first: add --dry-run)")
        if self.wizard.session.distributed.nnodes > 1:
            from engine.training.distributed import node_commands

            # Several nodes: the same session file on each (same paths), each with its own --node-rank.
            commands = "\n".join(f"  node {i}: [b]{escape(command)}[/b]"
                                  for i, command in enumerate(node_commands(self.wizard.session, session_file)))
            replay += (f"\nOn {self.wizard.session.distributed.nnodes} nodes, with this session file on each "
                       f"(node 0 at {escape(str(self.wizard.session.distributed.rdzv_endpoint))}):\n{commands}")
        self.query_one("#replay", Static).update(replay)
        theme = "ansi_dark" if self.app.current_theme.dark else "ansi_light"
        try:
            shown = session_for_file(self.wizard.session, session_file).to_json()
        except Exception as error:
            self.say(explain(error), error=True)
            return
        self.query_one("#session-json", Static).update(Syntax(shown.rstrip(), "json", theme=theme, background_color="default"))

    def on_input_changed(self, event: Input.Changed) -> None:
        self.commit(strict=False)
        self._render_session()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.commit(strict=False)
        self._render_session()

    def commit(self, strict: bool) -> Optional[str]:
        folder = self.query_one("#output-dir", Input).value.strip()
        if not folder:
            return "Give a run folder, such as runs/my-run." if strict else None
        resolved = str(Path(folder).expanduser().resolve())
        on_finish = self.query_one("#on-finish", Input).value.strip() or None
        self.wizard.edit_session({"output": {"dir": resolved, "save_merged": self.query_one("#save-merged", Checkbox).value,
                                             "on_finish": on_finish}})
        return None

    def _problems(self) -> Optional[str]:
        session = self.wizard.session
        if not session.dataset.path:
            return "No dataset yet: go back to the dataset step (escape) and choose one."
        if not Path(session.dataset.path).exists() and "/" not in session.dataset.path:
            return f"{session.dataset.path}: the dataset file is missing."
        return self.commit(strict=True)

    def save_session_file(self) -> Optional[Path]:
        """Write the session file the replay command names; also called by the app's ctrl+s."""
        problem = self._problems()
        if problem:
            self.say(problem, error=True)
            return None
        target = Path(self.query_one("#session-file", Input).value.strip() or "session.json").expanduser()
        try:
            path = save_session(session_for_file(self.wizard.session, target), target)
        except OSError as error:
            self.say(f"{target}: could not write the session file ({error.strerror or error}).", error=True)
            return None
        except Exception as error:
            self.say(explain(error), error=True)
            return None
        self.wizard.autosave()
        self.say(f"Saved {path.resolve()}. Replay it with: {replay_command(path)}")
        return path

    def action_save_file(self) -> None:
        self.save_session_file()

    def action_train(self) -> None:
        if self.save_session_file() is None:
            return
        self.say("Starting the run in the background …")
        self.launch_worker(self.wizard.session)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def launch_worker(self, session):
        from engine.runs.registry import launch

        return launch(session)

    def launch_done(self, handle) -> None:
        self.say(f"Training in {handle.run_dir} (process {handle.pid}).")
        self.wizard.watch_run(handle.run_dir)
