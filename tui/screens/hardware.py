"""Step 1: the GPUs (or plainly, none), RAM and disk; or a GPU to plan for instead."""

from __future__ import annotations

from typing import Any, Optional

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Input, Label, Select, Static

from tui.screens.base import StepScreen, explain
from tui.widgets.bars import UsageBar

THIS_MACHINE = "__this_machine__"


def _entry(item: Any, *names: str) -> Any:
    for name in names:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        if value is not None:
            return value
    return None


class LateSelect(Select):
    """A Select mounted after its screen was drawn. Should the app close while it mounts, its
    parts are never composed and Select's own mount handler would raise on the way out."""

    def _on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # Select's handler runs here instead, unless the app is closing
        if self.app.return_code is None:
            super()._on_mount(event)


class HardwareScreen(StepScreen):
    STEP = "hardware"
    AUTO_FOCUS = ""  # the GPU list takes the focus when it appears (see _fill_catalogue)
    HELP = "What this machine has, or the GPU you plan to rent or buy: every estimate after this is measured against it."

    def compose_body(self) -> ComposeResult:
        yield Vertical(Static("Looking for GPUs …", classes="muted"), id="devices", classes="panel")
        with Vertical(classes="panel", id="plan-panel"):
            yield Static("Plan for another GPU", classes="panel-title")
            with Horizontal(classes="row", id="plan-gpu-row"):
                yield Label("GPU", classes="row-label")
                # The list is built once the catalogue has been read, after the first frame: a
                # Select is the costliest widget on this screen (80 ms of CPU on a small machine,
                # a fifth of a bare Textual app's whole start).
                yield Static("reading the GPU catalogue …", id="plan-gpu-pending", classes="muted")
            with Horizontal(classes="row"):
                yield Label("or VRAM (GB)", classes="row-label")
                vram = self.wizard.draft.plan_vram_gb
                yield Input(f"{vram:g}" if vram and not self.wizard.draft.plan_gpu else "", placeholder="e.g. 24", id="plan-vram", compact=True)
            yield Static("", id="plan-summary", classes="muted")
        spread = self.wizard.session.distributed
        with Vertical(classes="panel", id="gpus-panel"):
            yield Static("Several GPUs", classes="panel-title")
            with Horizontal(classes="row"):
                yield Label("GPUs a node", classes="row-label")
                yield Input(str(spread.nproc_per_node), placeholder="1, or auto (all)", id="num-gpus", compact=True)
            with Horizontal(classes="row"):
                yield Label("Nodes", classes="row-label")
                yield Input(str(spread.nnodes), placeholder="1", id="num-nodes", compact=True)
            with Horizontal(classes="row", id="rdzv-row"):
                yield Label("Node 0 address", classes="row-label")
                yield Input(spread.rdzv_endpoint or "", placeholder="HOST:PORT, e.g. 10.0.0.1:29500", id="rdzv", compact=True)

    def on_mount(self) -> None:
        # After the first frame: these threads would otherwise compete with it for the interpreter.
        self.call_after_refresh(self.probe)
        self.call_after_refresh(self.load_catalogue)

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False)
    def probe(self):
        return self.wizard.hardware()

    def probe_done(self, profile) -> None:
        self._show_profile(profile)

    def probe_failed(self, error: BaseException) -> None:
        self._show_error(explain(error))  # the probe promises no exceptions; say so plainly if one escapes

    @work(thread=True, group="catalogue", exit_on_error=False)
    def load_catalogue(self) -> list:
        from engine.planner.hardware import load_gpu_catalogue

        return list(load_gpu_catalogue())

    def catalogue_done(self, catalogue: list) -> None:
        self._fill_catalogue(catalogue)

    def catalogue_failed(self, error: BaseException) -> None:
        self.say(f"The GPU catalogue could not be read: {explain(error)}", True)
        self._fill_catalogue([])  # the list still offers this machine, and the VRAM field works

    def _fill_catalogue(self, catalogue: list) -> None:
        options: list[tuple[str, str]] = [("This machine's hardware", THIS_MACHINE)]
        for item in catalogue:
            name = _entry(item, "name")
            vram = _entry(item, "total_gb", "vram_gb", "memory_gb")
            if name:
                options.append((f"{name} ({vram:g} GB)" if vram else str(name), str(name)))
        if self.app.return_code is not None or self._gpu_select() is not None:
            return  # the app is closing, or the list is already there
        wanted = self.wizard.draft.plan_gpu
        value = wanted if wanted and any(v == wanted for _, v in options) else THIS_MACHINE
        select = LateSelect(options, value=value, allow_blank=False, id="plan-gpu", compact=True)
        self.query_one("#plan-gpu-pending").remove()
        self.query_one("#plan-gpu-row").mount(select)
        if self.focused is None:  # nobody has moved the focus yet
            select.focus()
        self._update_summary()

    def _gpu_select(self) -> Optional[Select]:
        """The GPU list, or None while the catalogue is being read."""
        return next(iter(self.query("#plan-gpu").results(Select)), None)

    def _show_error(self, message: str) -> None:
        devices = self.query_one("#devices")
        devices.remove_children()
        devices.mount(Static(Text(message), classes="error"))

    def _show_profile(self, profile) -> None:
        devices = self.query_one("#devices")
        devices.remove_children()
        widgets: list = []
        if profile.gpus:
            for index, gpu in enumerate(profile.gpus):
                capability = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else ""
                facts = [f"compute {capability}" if capability else "",
                         "bf16" if gpu.bf16 else "no bf16 (fp16 instead)",
                         f"driver {gpu.driver}" if gpu.driver else ""]
                widgets.append(Static(f"[b]GPU {index}[/b]  {escape(gpu.name)}   [dim]{'  ·  '.join(f for f in facts if f)}[/dim]"))
                widgets.append(UsageBar("VRAM used", gpu.used_gb, gpu.total_gb, f"{gpu.free_gb:.1f} GB free", label_width=10, caption_width=18))
        else:
            widgets.append(Static(
                "[b]CPU only[/b]: no NVIDIA GPU was found (no driver, or NVML could not be read). Training still works "
                "on the CPU through Unsloth's CPU backend, but it is slow: fine for a small model such as the demo, "
                "not for 7B models. Plan for a GPU below to see what one would allow.",
                classes="cpu-only",
            ))
        widgets.append(Static(f"[b]CPU[/b]  {profile.cpu_cores} cores"))
        ram_used = max(0.0, profile.ram_total_gb - profile.ram_available_gb)
        widgets.append(UsageBar("RAM used", ram_used, profile.ram_total_gb, f"{profile.ram_available_gb:.1f} GB available", label_width=10, caption_width=18))
        widgets.append(Static(f"[b]Disk[/b]  {profile.disk_free_gb:.0f} GB free in this folder"))
        devices.mount_all(widgets)
        self._update_summary()

    # -- planning ----------------------------------------------------------------------------
    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "plan-gpu":
            if event.value != THIS_MACHINE:
                with self.query_one("#plan-vram", Input).prevent(Input.Changed):
                    self.query_one("#plan-vram", Input).value = ""
            self.commit(strict=False)
            self._update_summary()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("num-gpus", "num-nodes", "rdzv"):
            problem = self._commit_gpus()
            self.say(problem or "", error=bool(problem))
            self._update_summary()
            return
        if event.input.id == "plan-vram":
            if event.value.strip():  # a VRAM size replaces a GPU from the list
                self.wizard.draft.plan_gpu = None
                select = self._gpu_select()
                if select is not None:
                    with select.prevent(Select.Changed):
                        select.value = THIS_MACHINE
            problem = self.commit(strict=True)
            self.say(problem or "", error=bool(problem))
            self._update_summary()

    def _read_vram(self) -> tuple[Optional[float], Optional[str]]:
        text = self.query_one("#plan-vram", Input).value.strip()
        if not text:
            return None, None
        try:
            value = float(text)
        except ValueError:
            return None, f"VRAM must be a number of GB such as 24; got {text!r}."
        if value <= 0 or value > 4096:
            return None, f"VRAM must be between 0 and 4096 GB; got {text}."
        return value, None

    def _read_gpus(self) -> tuple[Optional[dict], Optional[str]]:
        """The distributed changes the GPU fields ask for, or a sentence saying what is wrong."""
        gpus_text = self.query_one("#num-gpus", Input).value.strip().lower() or "1"
        nodes_text = self.query_one("#num-nodes", Input).value.strip() or "1"
        endpoint = self.query_one("#rdzv", Input).value.strip() or None
        if gpus_text == "auto":
            gpus: Any = "auto"
        elif gpus_text.isdigit() and int(gpus_text) >= 1:
            gpus = int(gpus_text)
        else:
            return None, f'GPUs a node must be a whole number of 1 or more, or "auto" (all); got {gpus_text!r}.'
        if not (nodes_text.isdigit() and int(nodes_text) >= 1):
            return None, f"Nodes must be a whole number of 1 or more; got {nodes_text!r}."
        nodes = int(nodes_text)
        found = self.wizard.known_hardware()
        planned = bool(self.wizard.draft.plan_gpu or self.wizard.draft.plan_vram_gb)
        if isinstance(gpus, int) and found is not None and not planned and gpus > max(1, len(found.gpus)):
            count = len(found.gpus)
            return None, (f"This machine has {count} GPU{'s' if count != 1 else ''}; choose at most {max(1, count)}, "
                          "or plan for a GPU from the list above.")
        spread = self.wizard.session.distributed
        several = gpus == "auto" or gpus * nodes > 1
        changes = {
            "distributed.strategy": spread.strategy if not several or spread.strategy != "none" else "auto",
            "distributed.nproc_per_node": gpus,
            "distributed.nnodes": nodes,
            "distributed.node_rank": min(spread.node_rank, nodes - 1),
            "distributed.rdzv_endpoint": endpoint if nodes > 1 else None,
        }
        if not several:
            changes["distributed.strategy"] = "none" if spread.strategy == "none" else "auto"
        return changes, None

    def _commit_gpus(self) -> Optional[str]:
        changes, problem = self._read_gpus()
        if problem:
            return problem
        try:
            self.wizard.edit_session(changes, where="hardware step")
        except Exception as error:  # SessionError naming the field (a missing node 0 address)
            return explain(error)
        return None

    def commit(self, strict: bool) -> Optional[str]:
        problem = self._commit_gpus()
        if problem and strict:
            return problem
        vram, problem = self._read_vram()
        if problem:
            return problem if strict else None
        draft = self.wizard.draft
        select = self._gpu_select()
        if select is not None:  # before the list appears, the choice made so far stands
            gpu = select.value
            draft.plan_gpu = gpu if isinstance(gpu, str) and gpu != THIS_MACHINE else None
        draft.plan_vram_gb = vram
        return None

    def _update_summary(self) -> None:
        self.update_summary_worker()

    @work(thread=True, exclusive=True, group="summary", exit_on_error=False)
    def update_summary_worker(self) -> str:
        budget = self.wizard.budget()
        size = f"{budget.gb:.1f} GB" if budget.gb else "unknown size"
        where = "planned, not this machine" if budget.planned else "this machine"
        label = escape(budget.label)
        if budget.world_size > 1:
            nodes = f" on each of {budget.nodes} nodes" if budget.nodes > 1 else ""
            label = f"{budget.gpus} × {label}{nodes}"
            size += " a GPU"
        return f"Estimates will be measured against: [b]{label}[/b], {size} of {budget.kind} ({where})."

    def summary_done(self, text: str) -> None:
        self._show_summary(text)

    def summary_failed(self, error: BaseException) -> None:
        self._show_summary(f"[red]{escape(explain(error))}[/red]")

    def _show_summary(self, text: str) -> None:
        for summary in self.query("#plan-summary").results(Static):  # none once the app has closed
            summary.update(text)
