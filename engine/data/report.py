"""What the person sees before training: format, rows, split, token lengths, rendered examples."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

TRAINED_START = "▶"
TRAINED_END = "◀"
EXAMPLE_CHAR_LIMIT = 1500


@dataclass
class RenderedExample:
    """One row exactly as the model sees it: segments of text, each flagged trained (in the loss) or not."""

    segments: list[tuple[str, bool]]

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.segments)

    @property
    def trained_text(self) -> str:
        return "".join(text for text, trained in self.segments if trained)

    def marked(self) -> str:
        """The text with the trained parts between ▶ and ◀."""
        return "".join(f"{TRAINED_START}{text}{TRAINED_END}" if trained else text for text, trained in self.segments)


@dataclass
class DataReport:
    format: str
    columns: dict[str, Optional[str]]
    num_rows: int  # rows in the source
    skipped_rows: int  # invalid rows skipped (dataset.skip_invalid_rows)
    train_rows: int
    eval_rows: int
    token_stats: dict[str, float]  # min, median, p95, max: tokens per row before truncation
    truncated_rows: int  # rows longer than max_seq_length (cut to it)
    examples: list[RenderedExample] = field(default_factory=list)
    path: str = ""
    source: str = ""
    format_origin: str = "detected"  # detected | given | from dataset.columns
    template: str = "alpaca"  # what was used: "alpaca" or "chat"
    max_seq_length: int = 0
    completion_only_loss: bool = True
    # Rows whose trained part lay wholly past max_seq_length: nothing left to learn, so dropped.
    dropped_rows: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    shape: str = "supervised"  # supervised | tool_calling | preference (its chosen answers, as mapped)
    shape_description: str = "supervised fine-tuning data"
    warnings: list[str] = field(default_factory=list)  # trained anyway, but worth a look (placeholders)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["examples"] = [{"text": ex.text, "segments": [list(seg) for seg in ex.segments]} for ex in self.examples]
        return data

    def format_report(self) -> str:
        """Plain text for a terminal (the headless dry run prints it)."""
        lines = [f"Dataset: {self.path}" + (f" ({self.source})" if self.source else "")]
        mapped = ", ".join(f"{role} <- {col!r}" for role, col in self.columns.items() if col) or "none"
        lines.append(f"  format:     {self.format} ({self.format_origin}); columns: {mapped}")
        lines.append(f"  data:       {self.shape_description}")
        if self.format == "text":  # plain text is trained as written, whatever dataset.template says
            template = "no layout (plain text as written)"
        else:
            template = "the model's chat template" if self.template == "chat" else "Alpaca layout"
        trained = "the responses only" if self.completion_only_loss and self.format != "text" else "the whole text"
        lines.append(f"  template:   {template}; loss on {trained}")
        rows = f"  rows:       {self.num_rows:,} in the file"
        if self.skipped_rows:
            rows += f", {self.skipped_rows:,} invalid skipped"
        if self.dropped_rows:
            rows += f", {self.dropped_rows:,} dropped (nothing left to train on after truncation)"
        lines.append(rows)
        for reason in self.skip_reasons:
            lines.append(f"              skipped {reason}")
        total = self.train_rows + self.eval_rows
        share = f" ({self.eval_rows / total:.1%})" if total and self.eval_rows else ""
        lines.append(f"  split:      {self.train_rows:,} train, {self.eval_rows:,} eval{share}")
        stats = self.token_stats
        if stats:
            lines.append(
                "  tokens/row: min {min:,.0f}, median {median:,.0f}, p95 {p95:,.0f}, max {max:,.0f}".format(**stats)
            )
        cut = f"  truncation: {self.truncated_rows:,} of {self.num_rows - self.skipped_rows:,} rows are longer than max_seq_length {self.max_seq_length:,}"
        lines.append(cut + (" and are cut" if self.truncated_rows else ""))
        for warning in self.warnings:
            lines.append(f"  warning:    {warning}")
        for number, example in enumerate(self.examples, start=1):
            lines.append("")
            lines.append(f"Example {number} (exactly as the model sees it; trained part between {TRAINED_START} and {TRAINED_END}):")
            text = example.marked()
            if len(text) > EXAMPLE_CHAR_LIMIT:
                text = text[:EXAMPLE_CHAR_LIMIT] + f" … ({len(text) - EXAMPLE_CHAR_LIMIT:,} more characters)"
            lines.extend("  │ " + line for line in text.split("\n"))
        return "\n".join(lines)
