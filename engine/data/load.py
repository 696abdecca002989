"""Read a dataset source into a plain column table, remembering where each row came from.

Sources: JSON (a list, or an object holding a list), JSONL, CSV/TSV, Parquet, a folder written by
`datasets.save_to_disk`, and a hub dataset id. Text files are parsed here rather than by
`datasets.load_dataset` so that a broken row can be named by its line number, and nothing is
written to a cache. Heavy libraries (pyarrow, datasets) are imported only for the sources that
need them, so the wizard can import this module cheaply.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.errors import DataError
from engine.models import is_hub_id

KNOWN_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                  ".parquet": "parquet", ".pq": "parquet"}
HUB_PREFIXES = ("hf://datasets/", "hub://", "hf://")
# Keys that commonly hold the rows inside a JSON object ({"data": [...]}), tried in this order.
_LIST_KEYS = ("data", "train", "rows", "examples", "records", "items", "instances")
WHAT_WORKS = "a JSON, JSONL, CSV, TSV or Parquet file, a folder saved by datasets.save_to_disk, or a hub dataset id"


@dataclass
class RawTable:
    """Columns of a source, as Python values, plus how to name a row in an error message."""

    path: str
    source: str  # json | jsonl | csv | tsv | parquet | arrow-folder | hub
    column_names: list[str]
    columns: dict[str, list]
    num_rows: int
    # The file line each row starts on (JSONL, CSV, TSV); None where rows have no lines.
    line_numbers: Optional[list[int]] = field(default=None, repr=False)
    # How the file was read when that is not "one row per object", e.g. one conversation in the file.
    note: str = ""

    def where(self, index: int) -> str:
        """'data.jsonl, line 12' or 'data.parquet, row 12' for the row at `index` (0-based)."""
        if self.line_numbers is not None:
            return f"{self.path}, line {self.line_numbers[index]}"
        return f"{self.path}, row {index + 1}"

    def row(self, index: int) -> dict[str, Any]:
        return {name: self.columns[name][index] for name in self.column_names}


def hub_id_of(path: str) -> Optional[str]:
    """The dataset id when `path` names a hub dataset (hf://datasets/owner/name or owner/name)."""
    for prefix in HUB_PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix):].strip("/")
    # owner/name with no data-file suffix that is not on disk: a missing "data/train.jsonl" stays a path.
    if is_hub_id(path):
        return path
    return None


def load_table(path: str) -> RawTable:
    """Load `path` into a RawTable, or raise DataError with one sentence saying what is wrong."""
    path = str(path).strip()
    if not path:
        raise DataError(f"dataset.path is empty; give {WHAT_WORKS}.")
    hub_id = hub_id_of(path)
    if hub_id is not None:
        return _load_hub(path, hub_id)
    file = Path(path).expanduser()
    if file.is_dir():
        return _load_arrow_folder(path, file)
    if not file.exists():
        raise DataError(f"{path}: no such file or folder; give {WHAT_WORKS}.")
    kind = KNOWN_SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: files ending in {file.suffix or '(no suffix)'!r} are not read; give {WHAT_WORKS}.")
    if file.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; a dataset needs at least one row.")
    if kind == "parquet":
        return _load_parquet(path, file)
    text = _read_text(path, file)
    if not text.strip():
        raise DataError(f"{path}: the file is empty (only whitespace); a dataset needs at least one row.")
    if kind == "json":
        return _load_json(path, text)
    if kind == "jsonl":
        # A JSONL file that is really one JSON array is common enough to accept.
        if text.lstrip().startswith("["):
            return _load_json(path, text, source="jsonl")
        return _load_jsonl(path, text)
    return _load_csv(path, text, delimiter="\t" if kind == "tsv" else ",", source=kind)


def _read_text(path: str, file: Path) -> str:
    try:
        # utf-8-sig drops the byte-order mark Excel and Windows tools put at the start; text mode turns
        # Windows line ends (also inside quoted CSV cells) into the plain "\n" a model should see.
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None


def _table_from_rows(path: str, source: str, rows: list[dict], line_numbers: Optional[list[int]]) -> RawTable:
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in names:
                names[key] = None
    columns = {name: [row.get(name) for row in rows] for name in names}
    return RawTable(path, source, list(names), columns, len(rows), line_numbers)


def _load_jsonl(path: str, text: str) -> RawTable:
    rows: list[dict] = []
    line_numbers: list[int] = []
    decode = json.JSONDecoder().decode
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = decode(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line of a JSONL file must be one JSON object."
            ) from None
        if not isinstance(value, dict):
            raise DataError(
                f"{path}, line {number}: a JSON {_json_type(value)}, not an object; "
                "each line of a JSONL file must be one JSON object such as {\"text\": \"...\"}."
            )
        rows.append(value)
        line_numbers.append(number)
    return _table_from_rows(path, "jsonl", rows, line_numbers)


def _load_json(path: str, text: str, source: str = "json") -> RawTable:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # Several JSON values one after another: this is JSONL in a .json file.
            try:
                return _load_jsonl(path, text)
            except DataError:
                pass
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "a .json dataset is a list of objects, or an object holding one."
        ) from None
    single = _one_conversation(value)
    if single is not None:
        row, note = single
        table = _table_from_rows(path, source, [row], None)
        table.note = note
        return table
    rows = value
    if isinstance(value, dict):
        rows = _list_inside(path, value)
    if not isinstance(rows, list):
        raise DataError(f"{path}: the JSON holds a {_json_type(value)}; a dataset is a list of objects, or an object holding one.")
    if not rows:
        raise DataError(f"{path}: the JSON list is empty; a dataset needs at least one row.")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {index + 1}: a JSON {_json_type(row)}, not an object; every row must be an object such as {{\"text\": \"...\"}}.")
    return _table_from_rows(path, source, rows, None)


def _is_turn_list(items: Any) -> bool:
    """A list of chat turns (ShareGPT from/value or OpenAI role/content objects), not a list of rows."""
    if not isinstance(items, list) or not items:
        return False
    return all(isinstance(turn, dict) and (("from" in turn and "value" in turn) or
                                           ("role" in turn and ("content" in turn or "tool_calls" in turn)))
               for turn in items)


def _one_conversation(value: Any) -> Optional[tuple[dict, str]]:
    """(the row, a note) when the whole JSON is one conversation: an object holding one list of turns
    (with its other keys, such as `tools` or `system`, as the row's other columns), or a bare list of turns."""
    if isinstance(value, list) and _is_turn_list(value):
        key = "conversations" if "from" in value[0] else "messages"
        return {key: value}, f"one conversation (the file is a list of {len(value)} turns), read as 1 row"
    if isinstance(value, dict):
        keys = [key for key, item in value.items() if _is_turn_list(item)]
        if len(keys) == 1:
            return value, f"one conversation (a JSON object holding one {keys[0]!r} list), read as 1 row"
    return None


def _list_inside(path: str, value: dict) -> Any:
    """The list of rows held by a JSON object: the only list of objects, or one under a usual key."""
    candidates = [key for key, item in value.items() if isinstance(item, list) and item and isinstance(item[0], dict)]
    if len(candidates) == 1:
        return value[candidates[0]]
    for key in _LIST_KEYS:
        if key in candidates:
            return value[key]
    if candidates:
        raise DataError(
            f"{path}: the JSON object holds several lists of rows ({', '.join(map(repr, candidates))}); "
            "keep the one to train on in its own file."
        )
    if value and all(not isinstance(item, (list, dict)) for item in value.values()):
        raise DataError(f"{path}: the JSON holds one object, not a list of rows; write a list of objects, or one object a line as JSONL.")
    raise DataError(f"{path}: the JSON object holds no list of rows; a dataset is a list of objects, or an object holding one.")


def _json_type(value: Any) -> str:
    return {str: "string", int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}.get(type(value), "null")


def _load_csv(path: str, text: str, delimiter: str, source: str) -> RawTable:
    header_line = text.split("\n", 1)[0]
    if delimiter == "," and "," not in header_line:
        # A .csv written with ';' (European Excel) or tabs: go by what the header uses.
        for other in (";", "\t", "|"):
            if other in header_line:
                delimiter = other
                break
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DataError(f"{path}, line 1: cannot read the header ({exc}).") from None
    names = [name.strip() for name in header]
    if not any(names):
        raise DataError(f"{path}, line 1: the header row is empty; the first line must name the columns.")
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if not name:
            raise DataError(f"{path}, line 1: column {position + 1} has no name; name every column in the header.")
        if name in seen:
            raise DataError(f"{path}, line 1: column {name!r} appears twice in the header; give each column its own name.")
        seen[name] = position
    columns: dict[str, list] = {name: [] for name in names}
    line_numbers: list[int] = []
    previous_end = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}, line {previous_end + 1}: cannot parse this row ({exc}); check its quotes.") from None
        start = previous_end + 1
        previous_end = reader.line_num
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # blank line
        if len(record) != len(names):
            raise DataError(
                f"{path}, line {start}: {len(record)} fields where the header has {len(names)}; "
                f"quote fields that contain {'tabs' if delimiter == chr(9) else repr(delimiter)} or line breaks."
            )
        for name, value in zip(names, record):
            columns[name].append(value)
        line_numbers.append(start)
    if not line_numbers:
        raise DataError(f"{path}: the file has a header but no rows; a dataset needs at least one row.")
    return RawTable(path, source, names, columns, len(line_numbers), line_numbers)


def _load_parquet(path: str, file: Path) -> RawTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pa.ArrowInvalid, OSError):
        raise DataError(f"{path}: not a Parquet file (pyarrow cannot read it); give a file written as Parquet, or rename it to what it is.") from None
    return _table_from_arrow(path, "parquet", table)


def _table_from_arrow(path: str, source: str, table) -> RawTable:
    if table.num_rows == 0:
        raise DataError(f"{path}: the dataset has no rows; it needs at least one.")
    names = list(table.column_names)
    columns = {name: table.column(name).to_pylist() for name in names}
    return RawTable(path, source, names, columns, table.num_rows, None)


def _load_arrow_folder(path: str, folder: Path) -> RawTable:
    if not any((folder / marker).is_file() for marker in ("state.json", "dataset_dict.json", "dataset_info.json")):
        raise DataError(
            f"{path}: a folder, but not one saved by datasets.save_to_disk (no state.json or dataset_dict.json); "
            "give the data file itself or such a folder."
        )
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises several types for damaged folders
        raise DataError(f"{path}: cannot load this datasets folder ({str(exc).splitlines()[0]}).") from None
    return _table_from_dataset(path, "arrow-folder", loaded)


def _table_from_dataset(path: str, source: str, loaded) -> RawTable:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        else:
            raise DataError(f"{path}: holds the splits {', '.join(loaded)} and none is called 'train'; save the split to train on by itself.")
    # flatten_indices: a saved `select()` keeps an index map; the arrow table must be the rows as seen.
    table = loaded.flatten_indices().data.table if loaded._indices is not None else loaded.data.table
    return _table_from_arrow(path, source, table)


def _load_hub(path: str, hub_id: str) -> RawTable:
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id, split="train")
    except Exception as exc:  # offline, unknown id, gated: all end the same way for the person
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"{path}: cannot load hub dataset {hub_id!r} ({first[:200]}); download it and give the local file or folder instead."
        ) from None
    return _table_from_dataset(path, "hub", loaded)
