"""Unfilled template placeholders in what would be trained: `{{name}}`, `<author>`.

Data made from a template sometimes keeps its blanks: `{{name}}` in 85 of 91 answers teaches the
model to write `{{name}}`. Before training, the trained part of every rendered row is searched and
the person warned (not refused: a coding dataset may mean it) with a count and an example.

`<...>` counts only where the tokenizer does not know it as a token (`<|im_end|>` is one), the chat
template does not write it itself (`<tool_call>`), it is not closed later in the text (`<think>`
... `</think>` is markup), it is not common HTML, and it does not follow a letter (`vector<int>`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

MUSTACHE = re.compile(r"\{\{[^{}\n]{1,60}\}\}")
ANGLE = re.compile(r"(?<![\w<])<(\|?[A-Za-z_][\w.\-]*(?: [\w.\-]+){0,3}\|?)>")
HTML = {"a", "b", "i", "u", "s", "p", "br", "hr", "img", "em", "strong", "code", "pre", "div", "span", "ul", "ol",
        "li", "table", "tr", "td", "th", "thead", "tbody", "sub", "sup", "h1", "h2", "h3", "h4", "h5", "h6",
        "html", "head", "body", "title", "blockquote", "small", "center", "font", "input", "meta", "link", "wbr"}


@dataclass
class PlaceholderFinding:
    rows: int  # rows with at least one
    total: int  # placeholders in all
    checked: int  # rows searched
    example: str
    where: str  # the row the example is in

    def warning(self) -> str:
        return (f"{self.rows:,} of {self.checked:,} rows have what look like unfilled placeholders in the trained part "
                f"({self.total:,} in all), e.g. {self.example!r} in {self.where}; they would be learned as literal text: "
                "fill them in, or drop those rows.")


class PlaceholderFinder:
    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        template = getattr(tokenizer, "chat_template", None) or ""
        self.template = " ".join(template.values()) if isinstance(template, dict) else template
        self.known = set(vocab) | set(getattr(tokenizer, "all_special_tokens", []))

    def find(self, text: str) -> list[str]:
        found = MUSTACHE.findall(text)
        for match in ANGLE.finditer(text):
            token, name = match.group(0), match.group(1)
            if (token in self.known or token in self.template or name.lower() in HTML
                    or f"</{name}>" in text[match.end():]):
                continue
            found.append(token)
        return found

    def search(self, rows: Iterable[tuple[str, str]]) -> Optional[PlaceholderFinding]:
        """`rows`: (trained text, where the row is). A finding, or None when there are none."""
        hit_rows = total = checked = 0
        example = where = ""
        for text, location in rows:
            checked += 1
            found = self.find(text)
            if found:
                hit_rows += 1
                total += len(found)
                if not example:
                    example, where = found[0], location
        return PlaceholderFinding(hit_rows, total, checked, example, where) if hit_rows else None
