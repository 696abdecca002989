"""The finish screen: what a finished run left, whether it learned the task, how to use it, merge it, try it.

Where the adapter is and its size, the evaluation of the base against the fine-tuned model on the
eval split (exact match and, for JSON answers, valid JSON and fields right, with examples side by
side; key e runs it again), the exact Python that loads it with PEFT, the session that reproduces
the run, a merge into a whole model (key m) and a side-by-side "try it" of the base and the
fine-tuned model. Key g exports a GGUF (the type chosen beside it) for llama.cpp, Ollama and LM
Studio and shows its check: the merged model's and the GGUF's answers to the same prompt side by
side, their agreement, the file's size and speed, and the headless command. Loading and generating
happen in separate processes (engine.export, engine.evaluation) driven from Textual worker
threads: this screen never imports torch.
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
from textual.widgets import Input, Select, Static

from engine.evaluation.report import score_rows
from engine.runs.events import read_events
from tui.screens.base import BackgroundWork, explain
from tui.widgets.footer import StableFooter

ADAPTER_DIR, FULL_MODEL_DIR, MERGED_DIR = "adapter", "model", "merged"
# engine.export.gguf's types, without importing it (and pydantic) before the screen is up.
GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_k_m", "q5_k_m")
GGUF_DEFAULT = "q4_k_m"
GGUF_NOTES = {"f16": "16-bit, the size of the merged model", "bf16": "16-bit, as trained",
              "q8_0": "8-bit, near lossless", "q4_k_m": "4-bit, the usual choice", "q5_k_m": "5-bit"}


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
    from engine.planner.cost import cost_of, money
    from engine.runs.progress import progress_of

    run = progress_of(events)
    price = run.price()
    seconds = runtime if isinstance(runtime, (int, float)) else run.elapsed
    total = cost_of(seconds, price, run.world_size)
    if total is None:
        return ""
    count = f"{run.world_size} x " if run.world_size > 1 else ""
    return f"about {money(total, price.currency)} on {count}{run.gpu} at {price.rate()}"


class FinishScreen(BackgroundWork, Screen):
    """A finished run folder: adapter, load snippet, reproduce, merge, try it."""

    CSS_PATH = "../styles/finish.tcss"
    # What key g runs, after the Python interpreter (a test points it at a stand-in).
    EXPORT_COMMAND = ("-m", "engine.export.gguf")
    AUTO_FOCUS = None  # keys e, m, t, c work at once; t puts the cursor in the prompt
    BINDINGS = [
        Binding("e", "evaluate", "Evaluate", id="finish.evaluate"),
        Binding("m", "merge", "Merge", id="finish.merge"),
        Binding("g", "export_gguf", "Export GGUF", id="finish.gguf"),
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
        self.exporting = False
        self.gguf_progress = ""  # the export's latest progress line, written by its worker thread
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
            with Vertical(classes="panel", id="gguf-panel") as panel:
                panel.border_title = "GGUF for llama.cpp, Ollama, LM Studio"
                panel.border_subtitle = "g exports and checks"
                with Horizontal(id="gguf-choice"):
                    yield Select([(f"{t}  ({GGUF_NOTES[t]})", t) for t in GGUF_TYPES], value=GGUF_DEFAULT,
                                 allow_blank=False, id="gguf-type")
                    yield Static(self._gguf_command(GGUF_DEFAULT), id="gguf-command", markup=False)
                yield Static("", id="gguf-status", classes="muted", markup=False)
                yield Static("", id="gguf-result", markup=False)
                with Horizontal(id="gguf-answers"):
                    with VerticalScroll(classes="answer", id="gguf-merged") as merged:
                        merged.border_title = "Merged model (transformers)"
                        yield Static("", id="gguf-merged-text", markup=False)
                    with VerticalScroll(classes="answer", id="gguf-file") as gguf:
                        gguf.border_title = "GGUF (llama.cpp)"
                        yield Static("", id="gguf-file-text", markup=False)
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
        events = read_events(self.run_dir)
        self._show_evaluation(_evaluation(events))
        self._show_gguf(_last_event(events, "gguf"))
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

    # -- GGUF ---------------------------------------------------------------------------------------
    def _gguf_type(self) -> str:
        value = self.query_one("#gguf-type", Select).value
        return value if isinstance(value, str) else GGUF_DEFAULT

    def _gguf_command(self, gguf_type: str) -> str:
        return f"headless: lora-tui export {self.run_dir} --gguf {gguf_type}"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "gguf-type" and isinstance(event.value, str):
            self.query_one("#gguf-command", Static).update(self._gguf_command(event.value))

    @work(thread=True, group="gguf", exit_on_error=False)
    def check_gguf(self) -> str:
        from engine.export.llama_cpp import status

        return status()

    def gguf_done(self, text: str) -> None:
        if not self.exporting and not self.query_one("#gguf-result", Static).display:
            self.query_one("#gguf-status", Static).update(text)

    def _show_gguf(self, report: dict) -> None:
        """A GGUF check (the export's report, or the run's latest `gguf` event): verdict, figures, answers."""
        result, answers = self.query_one("#gguf-result", Static), self.query_one("#gguf-answers")
        shown = bool(report) and "passed" in report
        result.display = answers.display = shown
        if not shown:
            return
        from engine.export.gguf_summary import summary_lines

        lines = summary_lines(report)
        examples = report.get("prompts") or report.get("examples") or []
        result.update(Text("\n".join(line for line in lines if not line.startswith("  ")),
                           style="" if report.get("passed") else "bold red"))
        first = examples[0] if examples else {}
        question = f"{_clip(first.get('shown', ''), 90)}\n\n" if first else ""
        self.query_one("#gguf-merged-text", Static).update(question + (first.get("merged") or "(no answer)"))
        self.query_one("#gguf-file-text", Static).update(question + (first.get("gguf") or "(no answer)"))
        self.query_one("#gguf-status", Static).update("")

    def action_export_gguf(self) -> None:
        if self.exporting:
            self.notify("The GGUF export is already running.")
            return
        gguf_type = self._gguf_type()
        self.exporting = True
        self.gguf_progress = f"Exporting {gguf_type} in a separate process ..."
        self.query_one("#gguf-status", Static).update(self.gguf_progress)
        self._gguf_timer = self.set_interval(0.5, self._show_gguf_progress)
        self.query_one("#gguf-panel").scroll_visible()  # at 80x24 it is below the fold: show where it happens
        self.export_gguf(gguf_type)

    def _show_gguf_progress(self) -> None:
        self.query_one("#gguf-status", Static).update(self.gguf_progress)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export_gguf(self, gguf_type: str) -> dict:
        """`python -m engine.export.gguf RUN_DIR --gguf TYPE --json`: progress lines, then the report."""
        import os

        from engine.paths import PROJECT_ROOT

        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, *self.EXPORT_COMMAND, str(self.run_dir), "--gguf", gguf_type, "--json"]
        last: dict = {}
        with open(self.run_dir / "export.log", "ab") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            for line in process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "progress" in message:
                    self.gguf_progress = str(message["progress"])  # the timer shows it
                else:
                    last = message
            process.wait()
        return last or {"error": f"the export process exited with code {process.returncode}; see {self.run_dir / 'export.log'}"}

    def export_failed(self, error: BaseException) -> None:
        self.export_done({"error": explain(error)})

    def export_done(self, reply: dict) -> None:
        self.exporting = False
        timer = getattr(self, "_gguf_timer", None)
        if timer is not None:
            timer.stop()
        if "error" in reply:
            self.query_one("#gguf-status", Static).update(f"The GGUF export failed: {reply['error']}")
            self.notify(reply["error"], severity="error", timeout=10)
            return
        self._show_gguf(reply)
        if reply.get("passed"):
            self.notify(f"{reply['path']} passed its check.", title="GGUF written")
        else:
            self.notify(f"The GGUF failed its check: {reply.get('reason')}", severity="error", timeout=10)

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
