"""Step 5: the data: a file or folder, its detected format, the column for each role, a preview
rendered exactly as the model will see it, token lengths, and the eval split."""

from __future__ import annotations

from typing import Any, Optional

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from engine.session.edits import dataset_changes, parse_field, shown_path
from engine.session.schema import ROLES
from tui.screens.base import StepScreen, explain

NO_COLUMN = "__none__"
FORMAT_LABELS = {
    "auto": "auto (detect)",
    "instruction": "instruction / input / response",
    "prompt_completion": "prompt / completion",
    "sharegpt": "ShareGPT conversations",
    "messages": "OpenAI messages",
    "text": "plain text",
}


def _format_roles() -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """The intake's roles per format and which roles may stay unmapped (imported when used)."""
    from engine.data.detect import FORMAT_ROLES, OPTIONAL_ROLES

    return dict(FORMAT_ROLES), set(OPTIONAL_ROLES)


class DatasetScreen(StepScreen):
    STEP = "dataset"
    AUTO_FOCUS = "#dataset-path"
    HELP = "A JSON, JSONL, CSV or Parquet file, a `datasets` folder or a hub id. The format is detected; change any column it picked."
    BINDINGS = [
        Binding("ctrl+o", "browse", "Browse", id="dataset.browse"),
        Binding("ctrl+r", "preview", "Preview", id="dataset.preview"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._scan = None
        self._scan_error: Optional[str] = None
        self._report = None
        self._scanned_key: Optional[tuple] = None
        self._previewed_key: Optional[tuple] = None
        self._pending_scan: Optional[tuple] = None
        self._pending_preview: Optional[tuple] = None

    def compose_body(self) -> ComposeResult:
        section = self.wizard.session.dataset
        format_roles, _ = _format_roles()
        with Horizontal(classes="row"):
            yield Input(shown_path(section.path), placeholder="data/train.jsonl", id="dataset-path", compact=True)
            yield Button("Browse…", id="browse", compact=True)
        yield Static("No dataset chosen yet.", id="scan-summary", classes="muted")
        with Horizontal(id="mapping", classes="panel"):
            with Vertical(classes="mapping-col"):
                with Horizontal(classes="row"):
                    yield Label("Format", classes="row-label")
                    yield Select([(FORMAT_LABELS[f], f) for f in ("auto", *format_roles)], value=section.format,
                                 allow_blank=False, id="format", compact=True)
                for role in ROLES:
                    with Horizontal(classes="row role-row", id=f"row-{role}"):
                        yield Label(f"{role} ←", classes="row-label")
                        yield Select([], id=f"col-{role}", compact=True, prompt="column")
            with Vertical(classes="mapping-col"):
                with Horizontal(classes="row"):
                    yield Label("Template", classes="row-label")
                    yield Select([("Alpaca", "alpaca"), ("chat template", "chat")],
                                 value=section.template, allow_blank=False, id="template", compact=True)
                with Horizontal(classes="row"):
                    yield Label("Eval fraction", classes="row-label")
                    yield Input(f"{section.eval_fraction:g}", id="eval-fraction", compact=True)
                yield Static("", id="eval-error", classes="error")
                yield Checkbox("Loss on answers only", section.completion_only_loss, id="completion-only", compact=True)
        yield Static("", id="preview", classes="panel preview")

    def on_mount(self) -> None:
        self.query_one("#preview").display = False
        self._show_roles(None)
        if self.query_one("#dataset-path", Input).value.strip():
            self.scan()

    def on_show_step(self) -> None:
        # The model or max_seq_length may have changed since: the token figures depend on both.
        if self._scan is not None and self._preview_key() != self._previewed_key:
            self.preview()

    # -- reading the form ------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.query_one("#dataset-path", Input).value.strip()

    def _format_choice(self) -> str:
        value = self.query_one("#format", Select).value
        return value if isinstance(value, str) else "auto"

    def _effective_format(self) -> Optional[str]:
        chosen = self._format_choice()
        if chosen != "auto":
            return chosen
        return self._scan.format if self._scan is not None else None

    def _mapping(self) -> dict[str, Optional[str]]:
        fmt = self._effective_format()
        if fmt is None:
            return {}
        format_roles, _ = _format_roles()
        mapping: dict[str, Optional[str]] = {}
        for role in format_roles[fmt]:
            value = self.query_one(f"#col-{role}", Select).value
            mapping[role] = value if isinstance(value, str) and value != NO_COLUMN else None
        return mapping

    def _eval_fraction(self) -> tuple[Optional[float], Optional[str]]:
        try:
            return parse_field("dataset", "eval_fraction", self.query_one("#eval-fraction", Input).value), None
        except ValueError as error:
            return None, f"Eval fraction {error} (such as 0.05, or 0 for no eval split)."

    # -- events ------------------------------------------------------------------------------------
    def action_browse(self) -> None:
        from tui.screens.file_picker import FilePickerScreen

        self.app.push_screen(FilePickerScreen(self.path or None), self._picked)

    def _picked(self, path: Optional[str]) -> None:
        if path:
            self.query_one("#dataset-path", Input).value = shown_path(path)
            self.scan()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "browse":
            self.action_browse()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "dataset-path":
            self.scan()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "dataset-path":
            self.set_timer(0.6, lambda value=event.value: self._scan_if_still(value))
        elif event.input.id == "eval-fraction":
            _, problem = self._eval_fraction()
            self.query_one("#eval-error", Static).update(problem or "")
            if not problem:
                self.commit(strict=False)
                self.preview()

    def _scan_if_still(self, value: str) -> None:
        if value == self.query_one("#dataset-path", Input).value and value.strip():
            self.scan()

    def on_select_changed(self, event: Select.Changed) -> None:
        select_id = event.select.id or ""
        if select_id == "format":
            self.scan(use_mapping=False)
        elif select_id.startswith("col-") and self._scan is not None:
            self.scan(use_mapping=True)
        elif select_id == "template":
            self.commit(strict=False)
            self.preview()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.commit(strict=False)
        self.preview()

    def action_preview(self) -> None:
        self._previewed_key = None
        self.scan(use_mapping=True)

    # -- scanning: quick, no tokenizer -----------------------------------------------------------
    def scan(self, use_mapping: bool = False) -> None:
        path = self.path
        if not path:
            return
        fmt = self._format_choice()
        columns = self._mapping() if use_mapping else None
        key = (path, fmt, tuple(sorted((columns or {}).items(), key=lambda kv: kv[0])))
        if key == self._scanned_key and self._scan is not None:
            self.preview()
            return
        self.query_one("#scan-summary", Static).update(f"Reading {path} …")
        self.query_one("#mapping").loading = True
        self._pending_scan = key
        self.scan_worker(key, path, fmt, columns, self.wizard.session.dataset.skip_invalid_rows)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def scan_worker(self, key: tuple, path: str, fmt: str, columns: Optional[dict], skip_invalid: bool) -> tuple:
        from pathlib import Path

        from engine.data import scan_dataset

        full = str(Path(path).expanduser().resolve()) if Path(path).expanduser().exists() else path
        return key, scan_dataset(full, format=fmt, columns=columns, skip_invalid_rows=skip_invalid)

    def scan_done(self, result: tuple) -> None:
        self._scanned(*result)

    def scan_failed(self, error: BaseException) -> None:
        self._scan_failed(self._pending_scan, explain(error))

    def _scan_failed(self, key: tuple, message: str) -> None:
        if key != self._pending_scan:
            return  # a newer scan is on its way (thread workers cannot be interrupted)
        self.query_one("#mapping").loading = False
        self._scan, self._scan_error, self._scanned_key = None, message, key
        self.query_one("#scan-summary", Static).update(Text(message, style="bold red"))
        self.query_one("#preview", Static).update("")
        self.query_one("#preview").display = False

    def _scanned(self, key: tuple, scan) -> None:
        if key != self._pending_scan:
            return
        self.query_one("#mapping").loading = False
        self._scan, self._scan_error, self._scanned_key = scan, None, key
        origin = {"detected": "detected", "given": "as chosen", "from dataset.columns": "from the columns"}.get(scan.format_origin, scan.format_origin)
        skipped = f", {scan.skipped_rows} invalid rows skipped" if scan.skipped_rows else ""
        self.query_one("#scan-summary", Static).update(
            f"[b]{scan.num_rows:,}[/b] rows ({scan.source}{skipped}); format [b]{scan.format}[/b] ({origin}); "
            f"columns: {escape(', '.join(scan.column_names))}"
            + (f"\n{escape(scan.shape_description)}" if scan.shape_description != "supervised fine-tuning data" else "")
        )
        self._show_roles(scan)
        self.commit(strict=False)
        self.preview()

    def _show_roles(self, scan) -> None:
        format_roles, optional = _format_roles()
        fmt = self._effective_format()
        active = set(format_roles.get(fmt, ())) if fmt else set()
        for role in ROLES:
            self.query_one(f"#row-{role}").display = role in active
            if scan is None or role not in active:
                continue
            select = self.query_one(f"#col-{role}", Select)
            options = [(c, c) for c in scan.column_names]
            if role in optional:
                options.insert(0, ("(none)", NO_COLUMN))
            column = scan.columns.get(role)
            with select.prevent(Select.Changed):
                select.set_options(options)
                if column in scan.column_names:
                    select.value = column
                elif role in optional:
                    select.value = NO_COLUMN

    # -- preview: tokenizer, render, token lengths (heavier) ---------------------------------------
    def _preview_key(self) -> tuple:
        session = self.wizard.session
        return (session.model.name, session.model.max_seq_length, session.dataset.model_dump_json())

    def preview(self) -> None:
        if self._scan is None:
            return
        self.commit(strict=False)
        key = self._preview_key()
        if key == self._previewed_key:
            return
        session = self.wizard.session
        self.query_one("#preview").display = True
        self.query_one("#preview").loading = True
        self._pending_preview = key
        self.preview_worker(key, session.dataset, session.model.name, session.model.max_seq_length)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def preview_worker(self, key: tuple, section, model_name: str, max_seq_length: int) -> tuple:
        from engine.data import prepare_dataset
        from engine.models import load_tokenizer

        with self.wizard.heavy_lock:
            tokenizer = load_tokenizer(model_name)
            prepared = prepare_dataset(section, tokenizer, max_seq_length)
        return key, prepared.report

    def preview_done(self, result: tuple) -> None:
        self._show_preview(*result)

    def preview_failed(self, error: BaseException) -> None:
        self._preview_failed(self._pending_preview, explain(error))

    def _preview_failed(self, key: tuple, message: str) -> None:
        if key != self._pending_preview:
            return
        self.query_one("#preview").loading = False
        self._previewed_key, self._report = key, None
        self.query_one("#preview", Static).update(Text(message, style="bold red"))

    def _show_preview(self, key: tuple, report) -> None:
        if key != self._pending_preview:
            return
        self.query_one("#preview").loading = False
        self._previewed_key, self._report = key, report
        stats = report.token_stats
        text = Text()
        text.append("Tokens per row  ", style="bold")
        text.append(f"min {stats.get('min', 0):.0f}  median {stats.get('median', 0):.0f}  "
                    f"p95 {stats.get('p95', 0):.0f}  max {stats.get('max', 0):.0f}\n")
        cut_style = "bold red" if report.truncated_rows else ""
        text.append(f"Rows longer than max_seq_length {report.max_seq_length}: ", style="bold")
        text.append(f"{report.truncated_rows}", style=cut_style)
        if report.dropped_rows:
            text.append(f" ({report.dropped_rows} dropped: nothing left to train on)", style=cut_style)
        text.append("\nSplit  ", style="bold")
        text.append(f"{report.train_rows:,} train, {report.eval_rows:,} eval.  ")
        text.append("Trained-on text", style="bold reverse green")
        text.append(" is highlighted.\n")
        for warning in report.warnings:  # unfilled placeholders in the trained part
            text.append("Warning  ", style="bold yellow")
            text.append(warning + "\n")
        for index, example in enumerate(report.examples[:2]):
            text.append(f"\n── example {index + 1} " + "─" * 30 + "\n", style="dim")
            for segment, trained in example.segments:
                text.append(segment, style="reverse green" if trained else "")
            text.append("\n")
        self.query_one("#preview", Static).update(text)

    # -- into the session ----------------------------------------------------------------------
    def commit(self, strict: bool) -> Optional[str]:
        path = self.path
        if not path:
            return "Choose a dataset: type a path or press ctrl+o to browse." if strict else None
        fraction, problem = self._eval_fraction()
        changes: dict[str, Any] = {"path": path}
        if fraction is not None:
            changes["eval_fraction"] = fraction
        template = self.query_one("#template", Select).value
        if isinstance(template, str):
            changes["template"] = template
        changes["completion_only_loss"] = self.query_one("#completion-only", Checkbox).value
        if self._scan is not None:
            changes["format"] = self._format_choice()
            changes["columns"] = self._mapping() or None
        try:
            self.wizard.edit_session(dataset_changes(changes))
        except Exception as error:
            return explain(error) if strict else None
        if strict:
            if problem:
                return problem
            if self._scan_error:
                return self._scan_error
            if self._scan is None:
                self.scan()
                return "Reading the dataset first; press ctrl+n again when its summary shows."
        return None
