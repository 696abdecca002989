"""The finish screen: what a finished run left, whether it learned the task, how to use it, merge it, try it.

Where the adapter is and its size, the evaluation of the base against the fine-tuned model on the
eval split (exact match and, for JSON answers, valid JSON and fields right, with examples side by
side; key e runs it again), the exact Python that loads it with PEFT, the session that reproduces
the run, a merge into a whole model (key m) and a side-by-side "try it" of the base and the
fine-tuned model. Loading and generating happen in separate processes (engine.export,
engine.evaluation) driven from Textual worker threads: this screen never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Input, Static

from engine.evaluation.report import score_rows
from engine.runs.events import read_events
from tui.screens.base import BackgroundWork, explain
from tui.widgets.footer import StableFooter

ADAPTER_DIR, FULL_MODEL_DIR, MERGED_DIR = "adapter", "model", "merged"


def human_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def load_snippet(run_dir: Path) -> str:
    """The Python that loads what the run saved: the adapter through PEFT, or the full model."""
    adapter, full = run_dir / ADAPTER_DIR, run_dir / FULL_MODEL_DIR
    if (adapter / "adapter_config.json").is_file() or not full.is_dir():
        return (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            "# the base model is read from adapter_config.json's base_model_name_or_path\n"
            f"model = AutoPeftModelForCausalLM.from_pretrained({str(adapter)!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({str(adapter)!r})"
        )
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(full)!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(full)!r})"
    )


def _last_event(events: list[dict], kind: str) -> dict:
    return next((e for e in reversed(events) if e.get("event") == kind), {})


def _has_alpaca_input(events: list[dict]) -> bool:
    """Whether the run trained on instruction data with an `input` column (its data report says)."""
    data = _last_event(events, "data")
    return data.get("format") == "instruction" and bool((data.get("columns") or {}).get("input"))


def _evaluation(events: list[dict]) -> dict:
    """The run's latest evaluation on its own eval split (the end of the run's, or a later `e`)."""
    return next((e for e in reversed(events) if e.get("event") == "evaluation" and e.get("split", "eval") == "eval"
                 and ("error" in e or "tuned" in e)), {})


def _eval_scores(result: dict):
    """The measures, base against fine-tuned, as a small table."""
    from rich.table import Table

    table = Table(box=None, padding=(0, 2), show_edge=False)
    table.add_column(f"{result['rows']} eval rows, greedy", style="bold")
    table.add_column("base", justify="right")
    table.add_column("fine-tuned", justify="right", style="bold")
    for measure, base, tuned in score_rows(result):
        table.add_row(measure, base, tuned)
    return table


def _eval_examples(result: dict):
    """A few rows side by side: the reference, the base's answer and the fine-tuned one (✓ exact)."""
    from rich.table import Table

    table = Table(box=None, padding=(0, 1), show_edge=False, expand=True)
    for title in ("question → reference", "base", "fine-tuned"):
        table.add_column(title, ratio=1, overflow="fold")
    for index, example in enumerate(result.get("examples") or []):
        if index:
            table.add_row("", "", "")
        question = Text(_clip(example.get("question", ""), 90) + "\n", style="dim")
        mark = lambda ok: " ✓" if ok else " ✗"  # noqa: E731
        table.add_row(question + Text("→ " + _clip(example["reference"])), _clip(example["base"]) + mark(example["base_exact"]),
                      _clip(example["tuned"]) + mark(example["tuned_exact"]))
    return table


def _clip(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split()) or "(no text)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(events: list[dict]) -> str:
    end = _last_event(events, "end")
    losses = [e["loss"] for e in events if e.get("event") == "log" and isinstance(e.get("loss"), (int, float))]
    evals = [e["eval_loss"] for e in events if e.get("event") == "eval" and isinstance(e.get("eval_loss"), (int, float))]
    parts = [f"{end.get('status', 'unfinished')} at step {end.get('step', '?')}"]
    runtime = end.get("train_runtime")
    if isinstance(runtime, (int, float)):
        minutes, seconds = divmod(int(runtime), 60)
        parts.append(f"{minutes}:{seconds:02d} training")
    if len(losses) > 1:
        parts.append(f"loss {losses[0]:.4f} → {losses[-1]:.4f}")
    elif losses:
        parts.append(f"loss {losses[0]:.4f}")
    if evals:
        parts.append(f"eval loss {evals[-1]:.4f}")
    backends = [e.get("backend") for e in events if e.get("event") == "status" and e.get("state") == "loading_model"]
    if backends:
        parts.append(f"{backends[-1]} backend")
    spent = _total_cost(events, runtime)
    if spent:
        parts.append(spent)
    return " · ".join(parts)


def _total_cost(events: list[dict], runtime) -> str:
    """'about $0.52 on NVIDIA GeForce RTX 4090 at $0.69/h (example price, 2025-06)': the training
    time at the GPU's hourly price (issue 20); '' on a CPU or without a price."""
    from engine.planner.cost import money
    from engine.runs.progress import progress_of

    run = progress_of(events)
    price = run.price()
    seconds = runtime if isinstance(runtime, (int, float)) else run.elapsed
    if price is None or seconds is None:
        return ""
    total = seconds / 3600 * price.per_hour * max(run.world_size, 1)
    count = f"{run.world_size} x " if run.world_size > 1 else ""
    return f"about {money(total, price.currency)} on {count}{run.gpu} at {price.rate()}"


class FinishScreen(BackgroundWork, Screen):
    """A finished run folder: adapter, load snippet, reproduce, merge, try it."""

    CSS_PATH = "../styles/finish.tcss"
    AUTO_FOCUS = None  # keys e, m, t, c work at once; t puts the cursor in the prompt
    BINDINGS = [
        Binding("e", "evaluate", "Evaluate", id="finish.evaluate"),
        Binding("m", "merge", "Merge", id="finish.merge"),
        Binding("t", "focus_prompt", "Try it", id="finish.try"),
        Binding("c", "copy_snippet", "Copy code", id="finish.copy"),
        Binding("escape", "back", "Back", id="finish.back"),
    ]

    def __init__(self, run_dir: str | Path, *, name: Optional[str] = None):
        super().__init__(name=name)
        self.run_dir = Path(run_dir)  # shown as given; the app passes absolute run folders
        self.client = None  # engine.evaluation.generate.TryItClient, started on the first prompt
        self.merging = False
        self.evaluating = False
        self._has_eval_split: Optional[bool] = None

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        run_dir = self.run_dir
        events = read_events(run_dir)  # once: a long run's events file is megabytes
        adapter = run_dir / ADAPTER_DIR
        saved = adapter if adapter.is_dir() or not (run_dir / FULL_MODEL_DIR).is_dir() else run_dir / FULL_MODEL_DIR
        kind = "Adapter (PEFT)" if saved.name == ADAPTER_DIR else "Model (full fine-tuning)"
        with VerticalScroll(id="finish-body"):
            yield Static(f"Run finished: {_summary(events)}", id="finish-title", markup=False)
            with Vertical(classes="panel", id="saved-panel") as panel:
                panel.border_title = kind
                weights = sorted(saved.glob("*.safetensors")) if saved.is_dir() else []
                yield Static(f"{saved}  ({human_size(folder_size(saved))} in all)", id="saved-path", markup=False)
                yield Static(", ".join(f"{w.name} {human_size(w.stat().st_size)}" for w in weights) or "nothing saved yet",
                             id="saved-weights", classes="muted", markup=False)
            with Vertical(classes="panel", id="eval-panel") as panel:
                panel.border_title = "Does it do the task?"
                self._has_eval_split = _eval_rows(events) > 0
                panel.border_subtitle = "e evaluates again" if self._has_eval_split else ""
                yield Static("", id="eval-scores")
                yield Static("", id="eval-examples")
            with Vertical(classes="panel", id="snippet-panel") as panel:
                panel.border_title = "Load it"
                panel.border_subtitle = "c copies"
                yield Static(load_snippet(run_dir), id="snippet", markup=False)
            with Vertical(classes="panel", id="reproduce-panel") as panel:
                panel.border_title = "Reproduce"
                yield Static(f"lora-tui --replay {run_dir / 'session.json'}", id="reproduce", markup=False)
                yield Static("Point output.dir at a new folder first: a folder that holds a run is never overwritten.",
                             classes="muted")
            with Vertical(classes="panel", id="merge-panel") as panel:
                panel.border_title = "Merged model"
                panel.border_subtitle = "m merges"
                yield Static(self._merge_text(), id="merge-status", markup=False)
                yield Static("", id="gguf-status", classes="muted", markup=False)
            with Vertical(classes="panel", id="try-panel") as panel:
                panel.border_title = "Try it"
                panel.border_subtitle = "greedy, same template as training"
                with Vertical(id="prompts"):
                    yield Input(placeholder="A prompt for both models (enter to generate)", id="prompt")
                    if _has_alpaca_input(events):  # trained with an ### Input block: try it the same way
                        yield Input(placeholder="Its input, as in your data's input column (optional; enter to generate)",
                                    id="prompt-input")
                with Horizontal(id="answers"):
                    with VerticalScroll(classes="answer", id="base-answer") as base:
                        base.border_title = "Base model"
                        yield Static("", id="base-text", markup=False)
                    with VerticalScroll(classes="answer", id="tuned-answer") as tuned:
                        tuned.border_title = "Fine-tuned"
                        yield Static("", id="tuned-text", markup=False)
                yield Static("", id="try-status", classes="muted", markup=False)
        yield StableFooter()

    def on_mount(self) -> None:
        self.sub_title = str(self.run_dir)
        self._show_evaluation(_evaluation(read_events(self.run_dir)))
        self.check_gguf()

    def on_unmount(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            # Off the event loop: a generation in progress finishes (or is killed) before it exits.
            import threading

            threading.Thread(target=client.close, name="try-it-close", daemon=True).start()

    # -- evaluation --------------------------------------------------------------------------------
    def _show_evaluation(self, result: dict) -> None:
        scores, examples = self.query_one("#eval-scores", Static), self.query_one("#eval-examples", Static)
        examples.display = bool(result.get("examples"))
        if "error" in result:
            scores.update(Text(f"The evaluation failed: {result['error']} Press e to try again."))
        elif result:
            scores.update(_eval_scores(result))
            examples.update(_eval_examples(result))
        elif self._has_eval_split:
            scores.update(Text("Not evaluated yet. Press e to ask the base and the fine-tuned model the eval split's "
                               "questions (greedy) and score the answers against the references."))
        else:
            scores.update(Text("This run has no eval split (dataset.eval_fraction 0), so nothing was scored. "
                               f"lora-tui eval {self.run_dir} --data FILE scores the answers to any file of questions "
                               "and answers."))

    def action_evaluate(self) -> None:
        if self.evaluating:
            self.notify("The evaluation is already running.")
            return
        if not self._has_eval_split:
            self.notify(f"No eval split in this run: lora-tui eval {self.run_dir} --data FILE scores a file.", severity="warning")
            return
        self.evaluating = True
        self.query_one("#eval-scores", Static).update(
            Text("Evaluating in a separate process: loading the models, then answering the eval split ..."))
        self.evaluate()

    @work(thread=True, exclusive=True, group="evaluate", exit_on_error=False)
    def evaluate(self) -> dict:
        return _run_json([sys.executable, "-m", "engine.evaluation.evaluate", str(self.run_dir), "--json"], self.run_dir,
                         log="evaluate.log")

    def evaluate_failed(self, error: BaseException) -> None:
        self.evaluate_done({"error": explain(error)})

    def evaluate_done(self, reply: dict) -> None:
        self.evaluating = False
        self._show_evaluation(reply)
        if "error" not in reply:
            from engine.evaluation.report import headline

            self.notify(headline(reply), title="Evaluated", timeout=8)

    # -- merge -------------------------------------------------------------------------------------
    def _merge_text(self) -> str:
        merged = self.run_dir / MERGED_DIR
        if (merged / "config.json").is_file():
            note = ""
            try:
                note = json.loads((merged / "lora_tui_merge.json").read_text()).get("note", "")
            except (OSError, ValueError):
                pass
            return f"{merged}  ({human_size(folder_size(merged))})" + (f"\n{note}" if note else "")
        if not (self.run_dir / ADAPTER_DIR).is_dir():
            return "Full fine-tuning saved a whole model: there is no adapter to merge."
        return ("Not merged. Press m to merge the adapter into its base model (merged/, the base's 16-bit "
                "dtype; a QLoRA run's 4-bit base is reloaded unquantized for it).")

    def action_merge(self) -> None:
        if self.merging:
            self.notify("The merge is already running.")
            return
        if not (self.run_dir / ADAPTER_DIR).is_dir():
            self.notify("There is no adapter to merge in this run.", severity="warning")
            return
        self.merging = True
        self.query_one("#merge-status", Static).update("Merging in a separate process (loads the base model) ...")
        self.merge()

    @work(thread=True, exclusive=True, group="merge", exit_on_error=False)
    def merge(self) -> dict:
        return _run_json([sys.executable, "-m", "engine.export", "merge", str(self.run_dir), "--json"], self.run_dir)

    def merge_failed(self, error: BaseException) -> None:
        self.merge_done({"error": explain(error)})

    def merge_done(self, reply: dict) -> None:
        self.merging = False
        if "error" in reply:
            self.query_one("#merge-status", Static).update(f"The merge failed: {reply['error']}")
            self.notify(reply["error"], severity="error", timeout=10)
            return
        self.query_one("#merge-status", Static).update(self._merge_text())
        self.notify(f"Merged model written to {reply['path']}", title="Merged")

    @work(thread=True, group="gguf", exit_on_error=False)
    def check_gguf(self) -> str:
        from engine.export.merge import gguf_status

        return gguf_status()

    def gguf_done(self, text: str) -> None:
        self.query_one("#gguf-status", Static).update(text)

    # -- try it ------------------------------------------------------------------------------------
    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        prompt = self.query_one("#prompt", Input).value.strip()
        input_text = "".join(field.value.strip() for field in self.query("#prompt-input").results(Input))
        if not prompt:
            self.action_focus_prompt()
            return
        self.query_one("#base-text", Static).update("…")
        self.query_one("#tuned-text", Static).update("…")
        first = self.client is None
        self.set_focus(None)  # back to the screen's keys while the answers come
        self.query_one("#try-status", Static).update(
            "Loading the models in a separate process, then generating ..." if first else "Generating ...")
        self.try_prompt(prompt, input_text)

    @work(thread=True, exclusive=True, group="try", exit_on_error=False)
    def try_prompt(self, prompt: str, input_text: str = "") -> dict:
        from engine.evaluation.generate import TryItClient

        if self.client is None:
            self.client = TryItClient(self.run_dir)
        return self.client.ask(prompt, input_text)

    def try_failed(self, error: BaseException) -> None:
        self.try_done({"error": explain(error)})

    def try_done(self, reply: dict) -> None:
        status = self.query_one("#try-status", Static)
        if "error" in reply:
            self.query_one("#base-text", Static).update("")
            self.query_one("#tuned-text", Static).update("")
            status.update(reply["error"])
            return
        self.query_one("#base-text", Static).update(reply["base"] or "(no text)")
        self.query_one("#tuned-text", Static).update(reply["tuned"] or "(no text)")
        info = self.client.info if self.client else {}
        fmt, template = info.get("format"), info.get("template")
        if fmt == "text":
            layout = "no template (plain text, as in training)"
        elif template == "chat" or fmt in ("sharegpt", "messages"):
            layout = "the model's chat template, as in training"
        else:
            layout = "the Alpaca layout, as in training"
        status.update(f"Prompt rendered with {layout}; greedy decoding.")

    # -- other keys --------------------------------------------------------------------------------
    def action_copy_snippet(self) -> None:
        self.app.copy_to_clipboard(load_snippet(self.run_dir))
        self.notify("The load code is on the clipboard.")

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()


def _eval_rows(events: list[dict]) -> int:
    """Rows the run held out for evaluation (its data report); unknown counts as none."""
    data = _last_event(events, "data")
    return data.get("eval_rows") if isinstance(data.get("eval_rows"), int) else 0


def _run_json(command: list[str], run_dir: Path, log: str = "export.log") -> dict:
    """Run an engine command that prints one JSON object last; its stderr goes to the run folder's `log`."""
    import os

    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    from engine.paths import PROJECT_ROOT

    root = str(PROJECT_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        with open(run_dir / log, "ab") as handle:
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=handle, text=True, env=env)
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as exc:
        return {"error": f"{command[2]} {command[3]} did not answer ({exc}); see {run_dir / log}."}
