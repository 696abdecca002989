"""Writes the binary fixtures (Parquet, a datasets.save_to_disk folder) from text; run once, committed.

    .venv/bin/python tests/data/make_binary_fixtures.py
"""

from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent

ALPACA = {
    "instruction": ["Give the opposite of the word.", "Name a primary colour.", "Translate to French."],
    "input": ["hot", None, "Good morning"],
    "output": ["cold", "Red.", "Bonjour"],
}
MESSAGES = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
]

if __name__ == "__main__":
    pq.write_table(pa.table(ALPACA), HERE / "alpaca.parquet")
    pq.write_table(pa.table({"messages": MESSAGES}), HERE / "messages.parquet")
    datasets.Dataset.from_dict(ALPACA).save_to_disk(str(HERE / "alpaca_saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"messages": MESSAGES}),
                          "test": datasets.Dataset.from_dict({"messages": MESSAGES[:1]})}).save_to_disk(str(HERE / "messages_saved_dict"))
