"""Step 3: full fine-tuning, LoRA or QLoRA, each with its estimated peak memory against the budget."""

from __future__ import annotations

from typing import Any, Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.timer import Timer
from textual.widgets import DataTable, Input, Label, RadioButton, RadioSet, Select, Static

from engine.session.edits import parse_field
from tui.screens.base import StepScreen, explain
from tui.widgets.bars import UsageBar
from tui.widgets.field import FormField

REPLAN_DELAY = 0.3  # seconds after the last keystroke
METHODS = (("full", "Full fine-tune"), ("lora", "LoRA"), ("qlora", "QLoRA (4-bit)"))
# (section, field, label): the knobs that move the estimate most.
KNOBS = (
    ("lora", "r", "LoRA rank r"),
    ("training", "per_device_train_batch_size", "Batch size"),
    ("training", "gradient_accumulation_steps", "Grad accumulation"),
    ("model", "max_seq_length", "Max sequence length"),
)
SESSION_FILE = "session-file"  # draft.extra marker: the person's own session, not to be overridden
CHECKPOINTING = (("unsloth (offload to RAM)", "unsloth"), ("on", "true"), ("off", "false"))


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class MethodScreen(StepScreen):
    STEP = "method"
    AUTO_FOCUS = "#method"
    HELP = "Estimated peak memory of each method on this model; the recommendation is preselected. Change rank, batch or sequence length and the estimate follows."
    BINDINGS = [
        Binding("ctrl+g", "toggle_parts", "Parts", id="method.parts"),
        Binding("ctrl+r", "apply_recommendation", "Recommended", id="method.recommend"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._recommendation = None
        self._estimates: dict[str, Any] = {}
        self._plan_serial = 0
        self._replan_timer: Optional[Timer] = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="budget", classes="muted")
        with Horizontal(id="methods", classes="panel"):
            with RadioSet(id="method", compact=True):
                for method, label in METHODS:
                    yield RadioButton(label, value=self.wizard.session.method == method, id=f"method-{method}", compact=True)
            with Vertical(id="method-bars"):
                for method, _label in METHODS:
                    yield UsageBar("", None, None, id=f"bar-{method}", label_width=0, caption_width=13)
        yield Static("", id="recommendation", classes="panel recommendation")
        yield DataTable(id="parts", classes="-hidden", cursor_type="none", zebra_stripes=True)
        with Vertical(classes="panel form", id="knobs"):
            for section, name, label in KNOBS:
                yield FormField(label, _shown(self._current(section, name)), f"{section}-{name}")
            with Horizontal(classes="row"):
                yield Label("Grad checkpointing", classes="row-label")
                yield Select(CHECKPOINTING, value=_shown(self.wizard.session.training.gradient_checkpointing),
                             allow_blank=False, id="checkpointing", compact=True)
        yield Static("", id="time-cost", classes="panel muted")  # issue 20: how long, how much

    def _current(self, section: str, name: str) -> Any:
        return getattr(getattr(self.wizard.session, section), name)

    def on_mount(self) -> None:
        self.query_one("#recommendation").display = False
        self.query_one("#methods").loading = True
        self.on_show_step()

    def on_show_step(self) -> None:
        for section, name, _ in KNOBS:
            value = self._current(section, name)
            self.query_one(f"#field-{section}-{name}", FormField).set_value(
                _shown(value), same=lambda text, s=section, n=name, v=value: parse_field(s, n, text) == v
            )
        self._sync_checkpointing()
        self._select_radio(self.wizard.session.method)
        self._adapter_fields()
        self.plan()

    def _sync_checkpointing(self) -> None:
        select = self.query_one("#checkpointing", Select)
        wanted = _shown(self.wizard.session.training.gradient_checkpointing)
        if select.value != wanted:
            with select.prevent(Select.Changed):
                select.value = wanted

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "checkpointing":
            return
        value = {"true": True, "false": False}.get(str(event.value), str(event.value))
        if value != self.wizard.session.training.gradient_checkpointing:
            self.wizard.edit_session({"training.gradient_checkpointing": value})
            self.plan()

    def _select_radio(self, method: str) -> None:
        button = self.query_one(f"#method-{method}", RadioButton)
        if not button.value:
            with self.query_one(RadioSet).prevent(RadioSet.Changed):
                button.value = True

    # -- the plan: recommendation once per model and budget, estimates on every change -------
    def plan(self) -> None:
        session = self.wizard.session
        self._plan_serial += 1
        self.plan_worker(
            self._plan_serial,
            session.model.name, session.lora.r, session.training.per_device_train_batch_size,
            session.training.gradient_accumulation_steps, session.model.max_seq_length, session.training.gradient_checkpointing,
            list(session.lora.target_modules), session.training.optim, session.backend,
        )

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def plan_worker(self, serial: int, name: str, r: int, batch: int, accumulation: int, seq_len: int, checkpointing,
                    modules: list, optim: str, backend: str) -> tuple:
        from engine.planner.memory import estimate_memory

        info = self.wizard.model_info(name)
        budget = self.wizard.budget()
        device = "cpu" if budget.kind == "RAM" else "cuda"
        key = (name, budget.label, budget.gb, seq_len, budget.gpus, budget.nodes, backend)
        # Recommended from the seed's batch 4 x 4, not from what is being typed: the advice
        # should not chase the person's edits. Planned for the backend the session will run
        # ("auto" as Unsloth, with peft checked).
        recommendation = self.wizard.cached(("recommend", *key), lambda: _recommend(info, budget, seq_len, 4, 4, backend))
        usable = [m for m in modules if m in _available(info)] or list(info.presets["recommended"])
        settings = dict(r=r, target_modules=usable, batch_size=batch, seq_len=seq_len,
                        gradient_checkpointing=checkpointing, optim=optim, device=device, backend=backend)
        world = budget.world_size if device == "cuda" else 1
        estimates = {method: _per_gpu(estimate_memory, info, method, settings, world, budget.gb, recommendation)
                     for method, _ in METHODS}
        return serial, key, budget, recommendation, estimates

    def plan_done(self, result: tuple) -> None:
        self._show_plan(*result)

    def plan_failed(self, error: BaseException) -> None:
        self._show_error(self._plan_serial, explain(error))

    def _show_error(self, serial: int, message: str) -> None:
        if serial != self._plan_serial:
            return  # an older plan, overtaken by a newer one
        self.query_one("#methods").loading = False
        self.say(message, error=True)

    def _show_plan(self, serial: int, key: tuple, budget, recommendation, estimates: dict) -> None:
        if serial != self._plan_serial:
            return
        self.query_one("#methods").loading = False
        self._recommendation, self._estimates = recommendation, estimates
        planned = " (planned)" if budget.planned else ""
        size = f"{budget.gb:.1f} GB" if budget.gb else "unknown"
        label = escape(budget.label)
        if budget.world_size > 1:
            label = f"{budget.gpus} × {label}" + (f" × {budget.nodes} nodes" if budget.nodes > 1 else "")
            size += " a GPU"
        self.query_one("#budget", Static).update(
            f"Budget: [b]{label}[/b]{planned}, {size} of {budget.kind} · {_backend_label(key[-1], recommendation)}"
        )
        for method, _ in METHODS:
            estimate = estimates[method]
            fits = budget.gb is not None and estimate.total_gb <= budget.gb
            recommended = recommendation is not None and recommendation.method == method
            tag = ("★ recommended" if recommended else "fits") if fits else "does not fit"
            if estimate.world_size > 1:  # per GPU: say how it is laid out
                tag = f"{_layout(estimate)} {tag}"
            self.query_one(f"#bar-{method}", UsageBar).update(estimate.total_gb, budget.gb, tag)
        self._show_recommendation(recommendation)
        self._fill_parts(estimates)
        self.time_and_cost_worker(serial, key[0], budget, recommendation)
        # Preselect the recommendation once per model and budget; never over the person's own edits.
        extra = self.wizard.draft.extra
        applied = extra.get("recommended_for")
        if applied == SESSION_FILE:  # opened from a session file: its choices stand until model or budget change
            extra["recommended_for"] = list(key[:3])
        elif recommendation is not None and recommendation.method and applied != list(key[:3]):
            extra["recommended_for"] = list(key[:3])
            self.action_apply_recommendation()
        self.say("")

    @work(thread=True, exclusive=True, group="time_cost", exit_on_error=False)
    def time_and_cost_worker(self, serial: int, name: str, budget, recommendation) -> tuple:
        """Time and cost of the plan on this GPU and on the others that fit (engine.planner.cost): the
        dataset counted with the model's tokenizer once it is chosen, else per 10 million tokens."""
        from engine.planner import cost

        session = self.wizard.session
        info = self.wizard.model_info(name)
        tokens = None
        path = session.dataset.path
        if path:
            try:
                from pathlib import Path

                stamp = Path(path).stat().st_mtime
                tokens = self.wizard.cached(("tokens", name, path, stamp, session.model.max_seq_length),
                                            lambda: cost.dataset_workload(path, name, max_seq_length=session.model.max_seq_length,
                                                                          eval_fraction=session.dataset.eval_fraction))
            except Exception:  # the dataset step says what is wrong with a file; here it is only not counted
                tokens = None
        if tokens is None:
            tokens = cost.Workload(10_000_000, 1.0, float(min(session.model.max_seq_length, 512)), None, "")
        workload = cost.session_workload(session, tokens)
        gpu = budget.label if budget.kind == "VRAM" else None
        lines = cost.method_step_lines(info, session, workload, gpu, recommendation, num_gpus=budget.world_size)
        if not path:
            lines[0] = lines[0].rstrip(":") + " (choose the dataset for its own count):"
        return serial, lines

    def time_cost_done(self, result: tuple) -> None:
        serial, lines = result
        if serial == self._plan_serial:
            self.query_one("#time-cost", Static).update(escape("\n".join(lines)))

    def time_cost_failed(self, error: BaseException) -> None:
        self.query_one("#time-cost", Static).update(escape(f"No time estimate: {explain(error)}"))

    def _show_recommendation(self, rec) -> None:
        box = self.query_one("#recommendation", Static)
        box.display = rec is not None
        if rec is None:
            box.update("")
        elif not rec.method:
            box.update(f"[b red]Nothing fits.[/b red] {escape(rec.reason)}")
        else:
            label = dict(METHODS)[rec.method]
            checkpointing = "on" if rec.gradient_checkpointing else "off"
            adapter = f", r {rec.r}, alpha {rec.lora_alpha}" if rec.r else ""
            spread = ""
            if rec.strategy != "none":
                spread = f", {rec.strategy.upper()} over {rec.world_size} GPUs" + (
                    f" with CPU offload ({rec.offloaded_gb:.1f} GB RAM a process)" if rec.cpu_offload else "")
                spread += f": {rec.estimate.total_gb:.1f} GB a GPU"
            elif rec.world_size == 1 and self.wizard.budget().world_size > 1:
                spread = ", on one GPU"
            box.update(
                f"[b]Recommended:[/b] {label}{adapter}, batch {rec.per_device_train_batch_size} × "
                f"{rec.gradient_accumulation_steps} accumulation, gradient checkpointing {checkpointing}{spread}."
                f"\n[dim]{escape(rec.reason)}[/dim]"
            )

    def _fill_parts(self, estimates: dict) -> None:
        table = self.query_one("#parts", DataTable)
        table.clear(columns=True)
        table.add_column("Part (GB)")
        for _, label in METHODS:
            table.add_column(label)
        names: list[str] = []
        for estimate in estimates.values():
            names += [n for n in estimate.components if n not in names]
        for name in names:
            table.add_row(name, *(_part(estimates[m], name) for m, _ in METHODS))
        table.add_row("[b]total[/b]", *(f"[b]{estimates[m].total_gb:.2f}[/b]" for m, _ in METHODS))

    # -- actions ---------------------------------------------------------------------------------
    def action_toggle_parts(self) -> None:
        self.query_one("#parts").toggle_class("-hidden")

    def action_apply_recommendation(self) -> None:
        rec = self._recommendation
        if rec is None or not rec.method:
            self.notify("There is no recommendation to apply.", severity="warning")
            return
        changes: dict = {
            "method": rec.method,
            "training.per_device_train_batch_size": rec.per_device_train_batch_size,
            "training.gradient_accumulation_steps": rec.gradient_accumulation_steps,
        }
        if rec.backend:  # the plan fits only with that backend's kernels: "auto" must not fall back
            changes["backend"] = rec.backend
        if rec.r:  # None for full fine-tuning: no adapter
            changes.update({"lora.r": rec.r, "lora.lora_alpha": rec.lora_alpha or 2 * rec.r})
        if rec.target_modules:
            changes["lora.target_modules"] = list(rec.target_modules)
        current = self.wizard.session.training.gradient_checkpointing
        changes["training.gradient_checkpointing"] = (current or "unsloth") if rec.gradient_checkpointing else False
        spread = self.wizard.session.distributed
        if rec.strategy != "none":  # the strategy the plan is for, on the GPUs the hardware step chose
            # and FSDP's CPU offload when the plan fits only with the shards in RAM
            changes.update({"distributed.strategy": rec.strategy, "distributed.cpu_offload": rec.cpu_offload})
        elif spread.nproc_per_node != 1 or spread.nnodes != 1:  # more GPUs would not help: one process
            changes.update({"distributed.strategy": "none", "distributed.nproc_per_node": 1, "distributed.nnodes": 1,
                            "distributed.node_rank": 0, "distributed.rdzv_endpoint": None,
                            "distributed.cpu_offload": False})
        elif spread.cpu_offload:  # one process: no FSDP, so no offload
            changes["distributed.cpu_offload"] = False
        try:
            self.wizard.edit_session(changes, where="recommendation")
        except Exception as error:
            self.say(explain(error), error=True)
            return
        self.wizard.autosave()
        for section, name, _ in KNOBS:
            field = self.query_one(f"#field-{section}-{name}", FormField)
            field.show_error(None)
            field.set_value(_shown(self._current(section, name)))
        self._sync_checkpointing()
        self._select_radio(rec.method)
        self._adapter_fields()
        self.plan()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        method = (event.pressed.id or "").removeprefix("method-")
        if method and method != self.wizard.session.method:
            self.wizard.edit_session({"method": method})
        self._adapter_fields()

    def _adapter_fields(self) -> None:
        """Full fine-tuning has no adapter: its rank is not asked for."""
        self.query_one("#field-lora-r", FormField).disabled = self.wizard.session.method == "full"

    def on_input_changed(self, event: Input.Changed) -> None:
        parsed = self.parsed_field(event)
        if parsed is None:
            return
        field, section, name, value = parsed
        field.show_error(None)
        try:
            self.wizard.edit_session({f"{section}.{name}": value})
        except Exception as error:
            field.show_error(explain(error))
            return
        self._replan_soon()

    def _replan_soon(self) -> None:
        """Debounced: typing "512" re-plans once, 0.3 s after the last key, not once per key."""
        if self._replan_timer is not None:
            self._replan_timer.stop()
        self._replan_timer = self.set_timer(REPLAN_DELAY, self.plan, name="replan")

    def commit(self, strict: bool) -> Optional[str]:
        bad = [f.label for f in self.query(FormField) if f.error]
        if strict and bad:
            return f"Fix {', '.join(bad)} first (the message is on the field)."
        return None


def _recommend(info, budget, seq_len: int, batch: int, accumulation: int, backend: str = "auto"):
    from engine.planner.recommend import recommend

    if budget.kind == "RAM":
        return recommend(info, None, seq_len=seq_len, batch_size=batch, gradient_accumulation_steps=accumulation,
                         ram_gb=budget.gb, backend=backend)
    return recommend(info, budget.gb, seq_len=seq_len, batch_size=batch, gradient_accumulation_steps=accumulation,
                     backend=backend, num_gpus=budget.gpus, nodes=budget.nodes, node_ram_gb=budget.ram_gb)


# Layouts over several GPUs, in the order a method tries them: (strategy, cpu_offload).
_LAYOUTS = (("ddp", False), ("fsdp", False), ("fsdp", True))


def _per_gpu(estimate_memory, info, method: str, settings: dict, world: int, budget_gb, recommendation):
    """The estimate a GPU: the recommendation's layout for its method, else the first that fits
    (DDP, FSDP, FSDP with CPU offload; never offload for full fine-tuning), else FSDP."""
    if world <= 1:
        return estimate_memory(info, method, **settings)
    if recommendation is not None and recommendation.method == method and recommendation.strategy != "none":
        layouts = [(recommendation.strategy, recommendation.cpu_offload)]
    else:
        layouts = [layout for layout in _LAYOUTS if not (method == "full" and layout[1])]
    tried = []
    for strategy, offload in layouts:
        estimate = estimate_memory(info, method, **settings, strategy=strategy, world_size=world, cpu_offload=offload)
        if budget_gb is None or estimate.total_gb <= budget_gb * 0.9:
            return estimate
        tried.append(estimate)
    return next((e for e in tried if e.strategy == "fsdp" and not e.cpu_offload), tried[-1])


def _part(estimate, name: str) -> str:
    """A part's cell; a part FSDP shards shows its division: "36.80/2=18.40", or "36.80/2 in RAM"."""
    whole = estimate.unsharded.get(name)
    if whole:
        n = estimate.world_size
        return f"{whole:.2f}/{n} in RAM" if estimate.cpu_offload else f"{whole:.2f}/{n}={estimate.components[name]:.2f}"
    return f"{estimate.components.get(name, 0.0):.2f}"


def _layout(estimate) -> str:
    if estimate.strategy == "ddp":
        return f"DDP ×{estimate.world_size}"
    return f"FSDP /{estimate.world_size}" + (" offload" if estimate.cpu_offload else "")


def _backend_label(backend: str, recommendation) -> str:
    """Whose estimates these are: "auto" runs Unsloth where it imports, so it is planned for Unsloth."""
    if backend == "auto":
        return "backend unsloth (auto)."
    if backend == "unsloth" and recommendation is not None and recommendation.backend == "unsloth":
        return "backend unsloth (pinned: peft would not fit)."
    if recommendation is not None and recommendation.backend == "peft":
        return "backend peft (pinned: Unsloth loads the whole model onto every GPU)."
    return f"backend {backend}."


def _available(info) -> set[str]:
    names = set(info.linear_modules)
    for preset in info.presets.values():
        names.update(preset)
    return names
