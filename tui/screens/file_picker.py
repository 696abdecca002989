"""A modal file picker for data files: a directory tree that shows only what could be a dataset."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Static

from tui.widgets.footer import StableFooter

DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt"}


class DataTree(DirectoryTree):
    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in DATA_SUFFIXES)]


class FilePickerScreen(ModalScreen[Optional[str]]):
    """Returns the chosen path (a data file, or with `s` a `datasets` folder), or None."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="picker.cancel"),
        Binding("backspace", "up", "Parent folder", id="picker.up"),
        Binding("ctrl+o", "choose_folder", "Use folder", id="picker.folder"),
    ]

    def __init__(self, start: Optional[str] = None):
        super().__init__()
        path = Path(start).expanduser() if start else Path.cwd()
        while not path.is_dir() and path != path.parent:
            path = path.parent
        self.start = path if path.is_dir() else Path.cwd()

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static("Choose a data file (JSON, JSONL, CSV, TSV, Parquet) or a `datasets` folder", classes="panel-title")
            yield Static(str(self.start), id="picker-root", classes="muted")
            yield DataTree(str(self.start), id="picker-tree")
            yield StableFooter()

    def on_mount(self) -> None:
        self.query_one(DataTree).focus()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(str(event.path))

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_up(self) -> None:
        tree = self.query_one(DataTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent
        self.query_one("#picker-root", Static).update(str(parent))

    def action_choose_folder(self) -> None:
        tree = self.query_one(DataTree)
        node = tree.cursor_node
        if node is not None and node.data is not None and Path(node.data.path).is_dir():
            self.dismiss(str(node.data.path))
        else:
            self.notify("Move the cursor onto a folder first.", severity="warning")
