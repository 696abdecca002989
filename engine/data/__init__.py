"""Dataset intake: load a source, detect its format, map columns, render, tokenize, split, report.

`scan_dataset` is quick and needs no tokenizer (the wizard's dataset step); `prepare_dataset` makes
the pre-tokenized train / eval splits the training worker hands to TRL's SFTTrainer. Both raise
`engine.errors.DataError` with one sentence for bad data. Heavy libraries load on first use.
"""

from engine.data.detect import FORMAT_ROLES, FORMATS
from engine.data.prepare import DatasetScan, PreparedData, prepare_dataset, scan_dataset
from engine.data.report import DataReport, RenderedExample
from engine.data.templates import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, alpaca_prompt

__all__ = [
    "ALPACA_PROMPT_INPUT", "ALPACA_PROMPT_NO_INPUT", "DataReport", "DatasetScan", "FORMATS", "FORMAT_ROLES",
    "PreparedData", "RenderedExample", "alpaca_prompt", "prepare_dataset", "scan_dataset",
]
