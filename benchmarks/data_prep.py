"""How fast is dataset intake next to a plain `datasets.map(batched=True)` with the same tokenizer?

    .venv/bin/python benchmarks/data_prep.py [--rows 100000] [--format instruction|messages]

Writes N synthetic rows to a temporary JSONL file, then times, in one run and with the demo
model's tokenizer:
  baseline: the rows already in memory as a `datasets.Dataset`, one `map(batched=True)` that formats
            each row (the Alpaca layout, or the chat template) and tokenizes it: no loss mask, no
            checks, no split, no statistics;
  ours:     `engine.data.prepare_dataset` from the file: read, detect, check every row, render,
            tokenize with the loss mask, truncate, split, measure.
and prints both timings and the ratio (ours / baseline).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.templates import alpaca_prompt

WORDS = ("the model learns to answer questions about contacts orders invoices weather travel recipes code "
         "tests a short reply with names numbers dates and places in several sentences of plain text").split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def write_rows(path: Path, rows: int, fmt: str, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(rows):
        if fmt == "instruction":
            record = {"instruction": sentence(rng, 6, 16), "input": sentence(rng, 0, 30) if rng.random() < 0.6 else "",
                      "output": sentence(rng, 10, 60)}
        else:
            record = {"messages": [{"role": "user", "content": sentence(rng, 6, 30)},
                                   {"role": "assistant", "content": sentence(rng, 10, 60)}]}
        records.append(record)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return records


def baseline(records: list[dict], tokenizer, fmt: str, max_len: int) -> float:
    import datasets

    dataset = datasets.Dataset.from_list(records)
    eos = tokenizer.eos_token

    def alpaca(batch):
        texts = [alpaca_prompt(i, x) + o + eos for i, x, o in zip(batch["instruction"], batch["input"], batch["output"])]
        return tokenizer(texts, truncation=True, max_length=max_len)

    def chat(batch):
        texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in batch["messages"]]
        return tokenizer(texts, truncation=True, max_length=max_len, add_special_tokens=False)

    start = time.perf_counter()
    dataset.map(alpaca if fmt == "instruction" else chat, batched=True, remove_columns=dataset.column_names)
    return time.perf_counter() - start


def ours(path: Path, tokenizer, max_len: int):
    from engine.data import prepare_dataset
    from engine.session.schema import DatasetSection

    start = time.perf_counter()
    data = prepare_dataset(DatasetSection(path=str(path), eval_fraction=0.05), tokenizer, max_len)
    return time.perf_counter() - start, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--format", choices=("instruction", "messages"), default="instruction")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    args = parser.parse_args()

    import datasets

    from engine.models import load_tokenizer

    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        records = write_rows(path, args.rows, args.format)
        # Each side once to warm up (imports, tokenizer caches), then timed alternately, best of two.
        baseline(records[:2000], tokenizer, args.format, args.max_seq_length)
        warm = Path(folder) / "warm.jsonl"
        write_rows(warm, 2000, args.format, seed=1)
        ours(warm, tokenizer, args.max_seq_length)
        base_times, our_times = [], []
        for _ in range(2):
            base_times.append(baseline(records, tokenizer, args.format, args.max_seq_length))
            elapsed, data = ours(path, tokenizer, args.max_seq_length)
            our_times.append(elapsed)
    base, mine = min(base_times), min(our_times)
    report = data.report
    print(f"rows: {args.rows:,} ({args.format}), tokenizer: {args.model}, max_seq_length {args.max_seq_length}")
    print(f"tokens/row: median {report.token_stats['median']:.0f}, max {report.token_stats['max']}; "
          f"split {report.train_rows:,} / {report.eval_rows:,}")
    print(f"baseline datasets.map(batched=True) format+tokenize: {base:6.2f} s  ({args.rows / base:,.0f} rows/s)")
    print(f"engine.data.prepare_dataset (read, check, mask, split, stats): {mine:6.2f} s  ({args.rows / mine:,.0f} rows/s)")
    print(f"ratio ours / baseline: {mine / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
