"""Try it: the base model's and the fine-tuned model's answers to one prompt, side by side.

Generation runs in its own process, never in the UI: `python -m engine.evaluation.generate RUN_DIR --prompt TEXT`
prints one JSON object; `--serve` loads the models once and answers JSON lines on stdin
(`{"prompt": ..., "input": ...}`) with JSON lines on stdout, so the finish screen does not reload per
prompt. `input` is the Alpaca input of instruction data (`--input` on the command line).
The prompt is rendered with the session's template (the Alpaca layout or the chat template, as in
training), and decoding is greedy, so the two answers differ only by what training changed.

`TryItClient` (this module's top level imports only the standard library) starts and talks to
the serving process for a front end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

DEFAULT_MAX_NEW_TOKENS = 64


# -- inside the generation process -------------------------------------------------------------------

def _data_format(run_dir: Path, session) -> str:
    """The dataset format the run trained on: the worker's data report, else the session's."""
    from engine.runs.events import read_events

    for event in reversed(read_events(run_dir)):
        if event.get("event") == "data" and event.get("format"):
            return str(event["format"])
    if session.dataset.format != "auto":
        return session.dataset.format
    from engine.data import scan_dataset

    d = session.dataset
    return scan_dataset(d.path, format=d.format, columns=d.columns, skip_invalid_rows=d.skip_invalid_rows).format


def render_prompt(tokenizer, fmt: str, template: str, prompt: str, input_text: str = "") -> str:
    """The text the model sees before its answer, exactly as in training (engine.data's renderer).
    `input_text` is the Alpaca `input` of instruction data; other formats have no such field, so it
    follows the prompt after a blank line (as the chat template joins instruction and input)."""
    from engine.data.detect import CONVERSATION_FORMATS
    from engine.data.templates import Renderer

    renderer = Renderer(tokenizer, fmt, template, completion_only_loss=True)
    if input_text and fmt != "instruction":
        prompt, input_text = f"{prompt}\n\n{input_text}", ""
    if fmt == "text":
        return renderer.bos + prompt  # plain text: the model continues it
    if fmt in CONVERSATION_FORMATS:
        item = [("user", prompt), ("assistant", "")]
    elif fmt == "prompt_completion":
        item = (prompt, "")
    else:
        item = (prompt, input_text, "")
    text = ""
    for segment, trained in renderer.render(item):
        if trained:
            break
        text += segment
    return text


class Generator:
    """The run's base and fine-tuned models, loaded once."""

    def __init__(self, run_dir: str | Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from engine.session.schema import load_session

        self.run_dir = Path(run_dir).resolve()
        session = load_session(self.run_dir / "session.json")
        self.template = session.dataset.template
        trust = session.model.trust_remote_code
        on_gpu = torch.cuda.is_available()
        # fp32 on the CPU (bf16 matmuls are slow there); the GPU's 16-bit type otherwise.
        dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if on_gpu else torch.float32
        kwargs = dict(dtype=dtype, trust_remote_code=trust)
        if on_gpu:
            kwargs["device_map"] = {"": torch.cuda.current_device()}
            if session.method == "qlora":  # as trained: the 4-bit base, so it fits where training did
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=dtype)
        adapter, full = self.run_dir / "adapter", self.run_dir / "model"
        if (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            from engine.export.merge import base_model_path

            self.tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust)
            base = AutoModelForCausalLM.from_pretrained(base_model_path(self.run_dir), **kwargs)
            # One model: the base answers with the adapter switched off (PEFT's disable_adapter).
            self.tuned = PeftModel.from_pretrained(base, str(adapter))
            self.base = None
        elif (full / "config.json").is_file():
            from engine.models import resolve_model

            self.tokenizer = AutoTokenizer.from_pretrained(str(full), trust_remote_code=trust)
            self.base = AutoModelForCausalLM.from_pretrained(resolve_model(session.model.name).path, **kwargs)
            self.tuned = AutoModelForCausalLM.from_pretrained(str(full), **kwargs)
            self.base.eval()
        else:
            from engine.errors import UserError

            raise UserError(f"{self.run_dir}: no adapter/ or model/ yet; try it once the run has finished.")
        self.tuned.eval()
        self.format = _data_format(self.run_dir, session)

    def _generate(self, model, text: str, max_new_tokens: int) -> str:
        import torch

        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        new = output[0, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def answer(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, input_text: str = "") -> dict:
        text = render_prompt(self.tokenizer, self.format, self.template, prompt, input_text)
        if self.base is None:
            with self.tuned.disable_adapter():
                base = self._generate(self.tuned, text, max_new_tokens)
        else:
            base = self._generate(self.base, text, max_new_tokens)
        tuned = self._generate(self.tuned, text, max_new_tokens)
        return {"prompt": prompt, "prompt_text": text, "base": base, "tuned": tuned}


def _one_line(exc: BaseException) -> str:
    from engine.errors import UserError

    if isinstance(exc, UserError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"Generation failed: {type(exc).__name__}: {first}"[:300]


def _serve(run_dir: str, max_new_tokens: int, out) -> int:
    try:
        generator = Generator(run_dir)
    except Exception as exc:  # the client shows one line
        import traceback

        traceback.print_exc()
        out.write(json.dumps({"error": _one_line(exc)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ready": True, "format": generator.format, "template": generator.template}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            reply = generator.answer(str(request["prompt"]), int(request.get("max_new_tokens", max_new_tokens)),
                                     str(request.get("input", "")))
        except Exception as exc:  # one bad request does not end the session
            import traceback

            traceback.print_exc()
            reply = {"error": _one_line(exc)}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.evaluation.generate")
    parser.add_argument("run_dir")
    parser.add_argument("--prompt")
    parser.add_argument("--input", default="", help="the Alpaca input for instruction data")
    parser.add_argument("--serve", action="store_true", help="answer JSON lines on stdin")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    args = parser.parse_args(argv)
    from engine.quiet import quiet_libraries

    quiet_libraries()
    # The JSON protocol owns stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    if args.serve:
        return _serve(args.run_dir, args.max_new_tokens, out)
    if args.prompt is None:
        parser.error("give --prompt TEXT or --serve")
    try:
        reply = Generator(args.run_dir).answer(args.prompt, args.max_new_tokens, args.input)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        out.write(json.dumps({"error": _one_line(exc)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps(reply) + "\n")
    out.flush()
    return 0


# -- for a front end ------------------------------------------------------------------------------------

class TryItClient:
    """Starts `python -m engine.evaluation.generate RUN_DIR --serve` and asks it; blocking calls, for a worker thread."""

    def __init__(self, run_dir: str | Path, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
        self.run_dir = Path(run_dir)
        self.max_new_tokens = max_new_tokens
        self.process: Optional[subprocess.Popen] = None
        self.info: dict = {}
        self._lock = threading.Lock()

    def _start(self) -> None:
        from engine.paths import PROJECT_ROOT

        project_root = str(PROJECT_ROOT)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
        log = open(self.run_dir / "generate.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.evaluation.generate", str(self.run_dir), "--serve",
             "--max-new-tokens", str(self.max_new_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
            start_new_session=True,  # Ctrl+C in the UI is the UI's, not this process's
        )
        log.close()
        first = self._read()
        if "error" in first:
            self.close()
            raise RuntimeError(first["error"])
        self.info = first

    def _read(self) -> dict:
        line = self.process.stdout.readline() if self.process and self.process.stdout else ""
        if not line:
            code = self.process.wait() if self.process else None
            return {"error": f"The generation process ended (exit {code}); see {self.run_dir / 'generate.log'}."}
        return json.loads(line)

    def ask(self, prompt: str, input_text: str = "") -> dict:
        """{"base", "tuned", "prompt_text"} or {"error"}; loads the models on first use."""
        with self._lock:
            try:
                if self.process is None or self.process.poll() is not None:
                    self._start()
            except RuntimeError as exc:
                return {"error": str(exc)}
            self.process.stdin.write(json.dumps({"prompt": prompt, "input": input_text}) + "\n")
            self.process.stdin.flush()
            return self._read()

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.stdin.close()
            process.wait(timeout=10)
        except Exception:  # a stuck process is killed, never left behind
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
