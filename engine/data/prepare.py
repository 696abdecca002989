"""Scan a dataset (no tokenizer) and prepare it for training (render, tokenize, mask, split, measure).

The prepared splits are pre-tokenized in the shape TRL's SFTTrainer takes as is: `input_ids` and
`completion_mask` (1 on the tokens the loss is computed on). SFTTrainer builds `labels` from them
(-100 where the mask is 0) when `SFTConfig(completion_only_loss=True)`; Unsloth's patched trainer
does the same. Training on everything is a mask of all ones, so that setting is always True.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Optional

from engine.data.detect import resolve_mapping
from engine.data.load import RawTable, load_table
from engine.data.placeholders import PlaceholderFinder
from engine.data.report import DataReport, RenderedExample
from engine.data.rows import Records, build_records
from engine.data.shapes import Shape, check_trainable, recognise, tools_refusal
from engine.data.templates import Renderer, supports_tools
from engine.errors import DataError

SAMPLE_ROWS = 3
NUM_EXAMPLES = 3
TOKENIZE_BATCH = 1000


@dataclass
class DatasetScan:
    path: str
    source: str  # json | jsonl | csv | tsv | parquet | arrow-folder | hub
    num_rows: int
    column_names: list[str]
    format: str
    columns: dict[str, Optional[str]]  # role -> column
    sample_rows: list[dict[str, Any]]
    skipped_rows: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    format_origin: str = "detected"  # detected | given | from dataset.columns
    shape: str = "supervised"  # supervised | tool_calling | preference (the chosen answers, as mapped)
    shape_description: str = "supervised fine-tuning data"  # what the file holds, in words


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset with input_ids, completion_mask
    eval: Any  # datasets.Dataset or None
    report: DataReport


def _scan(path: str, format: str, columns: Optional[dict], skip_invalid_rows: bool) -> tuple[DatasetScan, RawTable, Records]:
    table = load_table(path)
    # Preference, KTO, multimodal and pre-tokenized files are named and refused before any row is read as chat.
    shape = check_trainable(recognise(table), table, columns)
    fmt, mapping, origin = resolve_mapping(table, format, columns)
    records = build_records(table, fmt, mapping, skip_invalid_rows)
    if records.tool_rows and shape.kind == "supervised":  # tool turns past the rows the shape was judged on
        shape = Shape("tool_calling", f"tool-calling conversations ({records.tool_rows:,} rows with tool calls, "
                                      f"results or definitions); {shape.description}")
    scan = DatasetScan(
        path=table.path, source=table.source, num_rows=table.num_rows, column_names=list(table.column_names),
        format=fmt, columns=mapping, sample_rows=[table.row(i) for i in range(min(SAMPLE_ROWS, table.num_rows))],
        skipped_rows=records.skipped_rows, skip_reasons=list(records.skip_reasons), format_origin=origin,
        shape=shape.kind, shape_description=shape.description,
    )
    return scan, table, records


def scan_dataset(path: str, format: str = "auto", columns: Optional[dict] = None, skip_invalid_rows: bool = False) -> DatasetScan:
    """Load, detect and check a dataset without a tokenizer; DataError with one sentence when it is unusable."""
    return _scan(path, format, columns, skip_invalid_rows)[0]


# -- tokenizing --------------------------------------------------------------------------------
def _segmentwise_is_lossless(tokenizer) -> bool:
    """True when tokenizing segments apart and joining the ids gives back the joined text.

    Byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen) pass; SentencePiece tokenizers that add
    a leading space to every text they see do not, and are tokenized whole with offsets instead.
    """
    pairs = [("### Response:\n", "Hello there."), ("<|im_start|>assistant\n", "Sure"), ("a b", " c\nd")]
    for left, right in pairs:
        ids = tokenizer([left, right], add_special_tokens=False)["input_ids"]
        joined = tokenizer.decode(ids[0] + ids[1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if joined != left + right:
            return False
    return True


def _tokenize_by_segment(batch, tokenizer, max_len):
    """Each segment tokenized on its own (one batched call), ids joined, mask set per segment."""
    texts, flags = batch["seg_text"], batch["seg_trained"]
    flat = [text for row in texts for text in row]
    flat_ids = tokenizer(flat, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    out_ids, out_mask, lengths, has_target = [], [], [], []
    k = 0
    for row_flags in flags:
        ids: list[int] = []
        mask: list[int] = []
        for trained in row_flags:
            seg = flat_ids[k]
            k += 1
            ids += seg
            mask += [1 if trained else 0] * len(seg)
        lengths.append(len(ids))
        ids, mask = ids[:max_len], mask[:max_len]
        out_ids.append(ids)
        out_mask.append(mask)
        has_target.append(1 in mask)
    return {"input_ids": out_ids, "completion_mask": out_mask, "num_tokens": lengths, "has_target": has_target}


def _tokenize_whole(batch, tokenizer, max_len):
    """The joined text tokenized once; each token's mask from the segment its first character is in."""
    texts, flags = batch["seg_text"], batch["seg_trained"]
    encoded = tokenizer(["".join(row) for row in texts], add_special_tokens=False,
                        return_attention_mask=False, return_offsets_mapping=True)
    out_ids, out_mask, lengths, has_target = [], [], [], []
    for row_texts, row_flags, ids, offsets in zip(texts, flags, encoded["input_ids"], encoded["offset_mapping"]):
        ends, total = [], 0
        for text in row_texts:
            total += len(text)
            ends.append(total)
        last = len(ends) - 1
        mask = [1 if row_flags[min(bisect_right(ends, start), last)] else 0 for start, _ in offsets]
        lengths.append(len(ids))
        ids, mask = list(ids[:max_len]), mask[:max_len]
        out_ids.append(ids)
        out_mask.append(mask)
        has_target.append(1 in mask)
    return {"input_ids": out_ids, "completion_mask": out_mask, "num_tokens": lengths, "has_target": has_target}


def _render_all(renderer: Renderer, records: Records, table: RawTable) -> tuple[list[list[str]], list[list[bool]]]:
    texts, flags = [], []
    for item, row in zip(records.items, records.row_indices):
        try:
            segments = renderer.render(item)
        except DataError:
            raise
        except Exception as exc:  # a chat template's raise_exception(), e.g. roles that must alternate
            raise DataError(f"{table.where(row)}: the model's chat template refuses this row ({exc}).") from None
        texts.append([text for text, _ in segments])
        flags.append([trained for _, trained in segments])
    return texts, flags


def _split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    import numpy as np

    if eval_fraction <= 0 or n < 2:
        return list(range(n)), []
    k = min(max(1, round(n * eval_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def _token_stats(lengths) -> dict[str, float]:
    import numpy as np

    values = np.asarray(lengths)
    return {"min": int(values.min()), "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)), "max": int(values.max())}


def prepare_dataset(cfg, tokenizer, max_seq_length: int, seed: int = 42) -> PreparedData:
    """Rendered, tokenized, masked, truncated and split data for SFTTrainer, plus the report.

    `cfg` is the session's DatasetSection (path already absolute). Rows whose trained tokens all
    lie past `max_seq_length` are dropped (TRL would drop them too) and counted in the report.
    """
    import datasets

    if max_seq_length <= 0:
        raise DataError(f"model.max_seq_length must be positive (got {max_seq_length}).")
    scan, table, records = _scan(cfg.path, cfg.format, cfg.columns, cfg.skip_invalid_rows)
    shape_description = scan.shape_description
    if records.tool_rows:
        if not supports_tools(tokenizer):
            raise DataError(tools_refusal(cfg.path, shape_description))
        shape_description += ", rendered with the tools support of the model's chat template"
    renderer = Renderer(tokenizer, scan.format, cfg.template, cfg.completion_only_loss,
                        conversational=records.conversational)
    texts, flags = _render_all(renderer, records, table)
    warnings = _placeholder_warnings(tokenizer, texts, flags, records, table)

    rendered = datasets.Dataset.from_dict({"seg_text": texts, "seg_trained": flags})
    tokenize = _tokenize_by_segment if _segmentwise_is_lossless(tokenizer) else _tokenize_whole
    # Our own fingerprint: datasets would otherwise hash (pickle) the whole tokenizer to name the result.
    # Unique per call: the splits live in memory, so there is no on-disk cache to hit or to poison.
    fingerprint = uuid.uuid4().hex
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the dry run and the worker print their own progress
    try:
        tokenized = rendered.map(
            tokenize, batched=True, batch_size=TOKENIZE_BATCH, remove_columns=["seg_text", "seg_trained"],
            fn_kwargs={"tokenizer": tokenizer, "max_len": max_seq_length}, new_fingerprint=fingerprint,
            load_from_cache_file=False,
        )
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    # Read the two helper columns straight from Arrow: iterating a Dataset formats row by row.
    lengths_list = tokenized.data.column("num_tokens").to_pylist()
    keep_flags = tokenized.data.column("has_target").to_pylist()
    kept = [i for i, ok in enumerate(keep_flags) if ok]
    dropped = len(lengths_list) - len(kept)
    if not kept:
        raise DataError(
            f"{cfg.path}: every row's trained part lies beyond max_seq_length {max_seq_length}; "
            "raise model.max_seq_length or shorten the prompts."
        )
    tokenized = tokenized.select_columns(["input_ids", "completion_mask"], new_fingerprint=fingerprint + "-cols")
    train_idx, eval_idx = _split_indices(len(kept), cfg.eval_fraction, seed)
    # Fixed fingerprints again: select() would otherwise hash the whole index list.
    train = tokenized
    if dropped or eval_idx:
        train = tokenized.select([kept[i] for i in train_idx], new_fingerprint=fingerprint + "-train")
    evaluation = tokenized.select([kept[i] for i in eval_idx], new_fingerprint=fingerprint + "-eval") if eval_idx else None

    examples = [RenderedExample(list(zip(texts[i], flags[i]))) for i in range(min(NUM_EXAMPLES, len(texts)))]
    report = DataReport(
        format=scan.format, columns=scan.columns, num_rows=scan.num_rows, skipped_rows=scan.skipped_rows,
        train_rows=len(train_idx), eval_rows=len(eval_idx), token_stats=_token_stats(lengths_list),
        truncated_rows=sum(1 for n in lengths_list if n > max_seq_length), examples=examples,
        path=scan.path, source=scan.source, format_origin=scan.format_origin, template=renderer.template,
        max_seq_length=max_seq_length, completion_only_loss=cfg.completion_only_loss, dropped_rows=dropped,
        skip_reasons=scan.skip_reasons, shape=scan.shape, shape_description=shape_description, warnings=warnings,
    )
    return PreparedData(train=train, eval=evaluation, report=report)


def _placeholder_warnings(tokenizer, texts, flags, records: Records, table: RawTable) -> list[str]:
    finder = PlaceholderFinder(tokenizer)
    trained = ("".join(text for text, on in zip(row_texts, row_flags) if on) for row_texts, row_flags in zip(texts, flags))
    finding = finder.search(zip(trained, (table.where(i) for i in records.row_indices)))
    return [finding.warning()] if finding else []
