"""Step 4: which linear modules get LoRA adapters: the model's real names, presets, live count."""

from __future__ import annotations

from typing import Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import SelectionList, Static

from tui.screens.base import StepScreen, explain

PRESETS = (("minimal", "1"), ("recommended", "2"), ("maximum", "3"))


class TargetModulesScreen(StepScreen):
    STEP = "target_modules"
    AUTO_FOCUS = "#modules"
    HELP = "Linear modules found in the model's own architecture. Space toggles one; 1 / 2 / 3 pick the minimal, recommended or maximum preset."
    BINDINGS = [Binding(key, f"preset('{name}')", name.capitalize(), id=f"modules.{name}") for name, key in PRESETS]

    def __init__(self) -> None:
        super().__init__()
        self._info = None
        self._shown_for: Optional[str] = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="trainable", classes="trainable")
        yield SelectionList[str](id="modules", compact=True)
        yield Static("", id="presets-line", classes="muted")

    def on_mount(self) -> None:
        self.query_one("#modules").loading = True
        self.on_show_step()

    def on_show_step(self) -> None:
        name = self.wizard.session.model.name
        if self._shown_for != name:
            self.load(name)
        else:
            self.count()

    @work(thread=True, exclusive=True, group="modules", exit_on_error=False)
    def load(self, name: str) -> tuple:
        return name, self.wizard.model_info(name)

    def modules_done(self, result: tuple) -> None:
        self._fill(*result)

    def modules_failed(self, error: BaseException) -> None:
        self.query_one("#modules").loading = False
        self.say(explain(error), error=True)

    def _fill(self, name: str, info) -> None:
        self._info, self._shown_for = info, name
        available = list(info.linear_modules) + [m for p in info.presets.values() for m in p if m not in info.linear_modules]
        available = list(dict.fromkeys(available))
        wanted = [m for m in self.wizard.session.lora.target_modules if m in available] or list(info.presets["recommended"])
        modules = self.query_one("#modules", SelectionList)
        modules.loading = False
        with modules.prevent(SelectionList.SelectedChanged):
            modules.clear_options()
            modules.add_options([(m, m, m in wanted) for m in available])
        self.query_one("#presets-line", Static).update(
            "  ".join(f"[b]{key}[/b] {preset}: {', '.join(info.presets[preset])}" for preset, key in PRESETS if preset in info.presets)
        )
        self._store(wanted)

    def action_preset(self, preset: str) -> None:
        if self._info is None or preset not in self._info.presets:
            return
        wanted = set(self._info.presets[preset])
        modules = self.query_one("#modules", SelectionList)
        modules.deselect_all()
        for module in wanted:
            modules.select(module)

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        self._store(list(event.selection_list.selected))

    def _store(self, modules: list[str]) -> None:
        if modules:
            self.wizard.edit_session({"lora.target_modules": modules})
        self.count()

    def count(self) -> None:
        if self._info is None:
            return
        modules = list(self.query_one("#modules", SelectionList).selected)
        self.count_worker(modules, self.wizard.session.lora.r)

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def count_worker(self, modules: list[str], r: int) -> str:
        info = self._info
        if not modules:
            return "[red]No module selected: LoRA needs at least one target module.[/red]"
        from engine.planner.target_modules import count_trainable_params

        trainable = count_trainable_params(info, modules, r)
        share = 100.0 * trainable / info.params if info.params else 0.0
        return (f"Trainable parameters at r {r}: [b]{trainable:,}[/b] of {info.params:,} "
                f"([b]{share:.2f}%[/b]) in {len(modules)} module type(s).")

    def count_done(self, text: str) -> None:
        self.query_one("#trainable", Static).update(text)

    def count_failed(self, error: BaseException) -> None:
        self.query_one("#trainable", Static).update(f"[red]{escape(explain(error))}[/red]")

    def commit(self, strict: bool) -> Optional[str]:
        if self._info is None:
            return None
        if not self.query_one("#modules", SelectionList).selected and strict:
            return "Select at least one module (2 picks the recommended set)."
        return None
