"""The troubleshooting panel: what the diagnostics found, with each remedy on a number key."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

TITLES = {
    "no_decrease": "Loss is not decreasing",
    "overfitting": "Overfitting",
    "oom": "Out of memory",
    "nan": "Loss became NaN",
    "divergence": "Loss is exploding",
    "no_task_gain": "The loss fell but the task did not improve",
}
RESTART_WORDS = {"resume": "resumes from the last checkpoint", "fresh": "restarts the run", None: "advice"}


def numbered_remedies(findings: list[dict]) -> list[tuple[dict, dict]]:
    """(finding, remedy) pairs in key order: newest finding first, at most nine keys."""
    pairs = [(finding, remedy) for finding in reversed(findings) for remedy in finding.get("remedies", [])]
    return pairs[:9]


class FindingsPanel(VerticalScroll):
    """Call `show(findings, notes)`; the screen maps keys 1-9 through `numbered_remedies`."""

    DEFAULT_CSS = """
    FindingsPanel { height: auto; border: round $warning 60%; padding: 0 1; }
    FindingsPanel.-empty { border: round $success 40%; }
    FindingsPanel > Static { height: auto; }
    FindingsPanel > .finding { margin-bottom: 1; }
    """

    def on_mount(self) -> None:
        self.border_title = "Troubleshooting"
        self.show([], [])

    def show(self, findings: list[dict], notes: list[str]) -> None:
        self.remove_children()
        self.set_class(not findings, "-empty")
        blocks = []
        for note in notes[-3:]:
            blocks.append(Static(Text(note, style="italic"), classes="note"))
        if not findings:
            blocks.append(Static(Text("Nothing wrong so far: loss, evaluations and numbers look healthy.", style="dim")))
        key = 0
        for finding in reversed(findings):
            text = Text()
            text.append(TITLES.get(finding.get("kind"), str(finding.get("kind"))), style="bold")
            if finding.get("step") is not None:
                text.append(f"  (step {finding['step']})", style="dim")
            message = str(finding.get("message", ""))
            title = TITLES.get(finding.get("kind"), "")
            if title and message.lower().startswith(title.lower() + ":"):
                message = message[len(title) + 1:].lstrip()  # the title above says it already
            text.append("\n" + message + "\n")
            for remedy in finding.get("remedies", []):
                key += 1
                shown = f"[{key}]" if key <= 9 else "   "
                text.append(f"\n{shown} ", style="bold reverse" if key <= 9 else "")
                text.append(f" {remedy.get('label', remedy.get('id'))}")
                text.append(f"  ({RESTART_WORDS.get(remedy.get('restart'), remedy.get('restart'))})", style="dim")
            blocks.append(Static(text, classes="finding"))
        self.mount_all(blocks)
