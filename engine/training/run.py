"""One training run inside the worker process: load, prepare, train, save.

The backend module (already imported by the worker, Unsloth first) loads the model; the rest is
TRL's SFTTrainer configured from the session, plus our progress callback.

Under torchrun every rank runs this with its own `Rank`: all ranks load, train and (for FSDP)
gather the trained weights; only global rank 0 saves, merges, evaluates and ends the run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine.errors import UserError
from engine.runs.registry import last_checkpoint
from engine.session.schema import load_session
from engine.training.distributed import Rank

ADAPTER_DIR = "adapter"
FULL_MODEL_DIR = "model"


class TrainingRun:
    def __init__(self, run_dir: Path, backend, events, stop, resume: bool = False, rank: Rank | None = None,
                 strategy: str = "none"):
        self.run_dir = Path(run_dir)
        self.backend = backend
        self.events = events
        self.stop = stop
        self.resume = resume
        self.rank = rank or Rank()
        self.strategy = strategy if self.rank.distributed else "none"
        self.progress = None
        self.rank_facts: dict = {}  # what this rank held and trained, for its report (ranks/rank-R.json)

    @property
    def step_in_progress(self) -> int | None:
        return self.progress.step_in_progress if self.progress is not None else None

    def run(self) -> None:
        session = load_session(self.run_dir / "session.json")
        resume_from = None
        if self.resume:
            resume_from = last_checkpoint(self.run_dir)
            if resume_from is None:
                raise UserError(f"{self.run_dir}: no checkpoint to resume from; run without --resume to start afresh.")

        self.events.emit("status", state="loading_model", backend=self.backend.NAME, model=session.model.name)
        from engine.models import resolve_model

        model_path = resolve_model(session.model.name).path
        model, tokenizer = self.backend.load(session, model_path)
        self.events.emit("model", **_model_facts(model, session))

        self.events.emit("status", state="preparing_data", dataset=session.dataset.path)
        from engine.data import prepare_dataset

        data = prepare_dataset(session.dataset, tokenizer, session.model.max_seq_length, seed=session.training.seed)
        report = data.report.to_dict()
        report.pop("examples", None)  # the dashboard reads rendered examples from the dry run, not here
        self.events.emit("data", **report)

        trainer, progress = self._build_trainer(session, model, tokenizer, data, resume_from)
        self.progress = progress
        started = time.monotonic()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        step = trainer.state.global_step
        if self.rank.distributed:
            self.rank_facts.update(step=step, trainable_sha256=trainable_digest(model))

        if progress.stopped_on_request:
            checkpoint = last_checkpoint(self.run_dir)
            self.events.emit("end", status="stopped", step=step, checkpoint=str(checkpoint) if checkpoint else None)
            return
        saved = self._save(session, model, tokenizer)
        if not self.rank.main:
            return  # rank 0 merges, evaluates and ends the run
        total_steps, runtime = trainer.state.max_steps, round(time.monotonic() - started, 1)
        merge = session.output.save_merged and session.method != "full"
        evaluate = data.eval is not None and len(data.eval) > 0
        if merge or evaluate:
            del trainer, model  # free the training copy: the merge and the evaluation load the base again
            _free_memory()
        if merge:
            saved.update(self._merge())
        if evaluate:
            self._evaluate()
        if session.output.gguf:
            saved.update(self._export_gguf(session.output.gguf))
        self.events.emit(
            "end", status="completed", step=step, total_steps=total_steps,
            train_runtime=runtime, **saved,
        )

    def _build_trainer(self, session, model, tokenizer, data, resume_from):
        import torch
        from trl import SFTConfig, SFTTrainer

        from engine.training.args import sft_config_kwargs
        from engine.training.callback import ProgressCallback, count_training_tokens

        on_gpu = torch.cuda.is_available()
        kwargs = sft_config_kwargs(
            session, self.run_dir, has_eval=data.eval is not None and len(data.eval) > 0,
            on_gpu=on_gpu, bf16_ok=on_gpu and torch.cuda.is_bf16_supported(), train_rows=len(data.train),
            world_size=self.rank.world_size,
        )
        kwargs.update(self.backend.trainer_overrides(session))
        # The dataset arrives tokenized with a completion_mask; TRL turns it into labels.
        kwargs["completion_only_loss"] = session.dataset.completion_only_loss
        config = SFTConfig(**kwargs)
        from engine.troubleshooting.diagnostics import Diagnostician

        report = data.report
        diagnostician = Diagnostician(
            session, example=report.examples[0].marked() if report.examples else None, train_rows=report.train_rows,
        )
        # A backend may bring its own SFTTrainer (the peft backend's CPU loss; see peft_backend.trainer_class).
        trainer_class = self.backend.trainer_class() if hasattr(self.backend, "trainer_class") else SFTTrainer
        if self.strategy == "fsdp" and self.backend.NAME == "peft":
            # FSDP2 over all ranks (the process group exists now: SFTConfig set it up); on the unsloth
            # backend Unsloth shards the model itself inside the Trainer (UNSLOTH_FSDP2=1, and
            # UNSLOTH_FSDP2_CPU_OFFLOAD=1 for the offload). With cpu_offload the shards live in RAM.
            from engine.training.fsdp import fsdp2_trainer, parameters_offloaded, shard_model

            shard_model(model, cpu_offload=session.distributed.cpu_offload)
            self.rank_facts["cpu_offload"] = parameters_offloaded(model)
            trainer_class = fsdp2_trainer(trainer_class)
        elif self.strategy == "ddp" and not on_gpu:
            from engine.training.distributed import cpu_ddp_trainer

            trainer_class = cpu_ddp_trainer(trainer_class)
        trainer = trainer_class(
            model=model, args=config, train_dataset=data.train,
            eval_dataset=data.eval if kwargs["eval_strategy"] != "no" else None,
            processing_class=tokenizer,
        )
        if self.rank.distributed:
            # What this rank holds: everything under DDP, about 1 / world size under FSDP (the peft
            # backend sharded above; Unsloth shards inside the Trainer's constructor).
            from engine.training.fsdp import parameters_held

            held, total = parameters_held(model)
            self.rank_facts.update(params_held=held, params_total=total)
            print(f"rank {self.rank.rank} ({self.strategy}): holds {held:,} of {total:,} parameter elements", flush=True)
        counter = count_training_tokens(trainer)
        progress = ProgressCallback(
            self.events, self.stop, counter, diagnostician,
            batch_size=session.training.per_device_train_batch_size,
            resume_from=str(resume_from) if resume_from else None, strategy=self.strategy,
        )
        trainer.add_callback(progress)
        return trainer, progress

    def _merge(self) -> dict:
        """output.save_merged: merged/ through engine.export in a fresh process (this one may carry
        Unsloth's patches of transformers). A failed merge keeps the trained adapter and says why."""
        import gc
        import json
        import subprocess
        import sys

        gc.collect()
        self.events.emit("status", state="merging")
        result = subprocess.run([sys.executable, "-m", "engine.export", "merge", str(self.run_dir), "--json"],
                                stdout=subprocess.PIPE, text=True)
        try:
            reply = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            reply = {"error": f"the merge process exited with code {result.returncode}"}
        if "error" in reply:
            return {"merge_error": reply["error"]}
        return {"merged_dir": reply["path"], "merged_note": reply["note"]}

    def _export_gguf(self, gguf_type: str) -> dict:
        """output.gguf: `lora-tui export RUN_DIR --gguf TYPE` in a fresh process, as the merge. The export
        writes its own `gguf` event (the check); the end event names the file, or why there is none.
        A failed export never fails the trained run."""
        import json
        import subprocess
        import sys

        self.events.emit("status", state="exporting_gguf", gguf_type=gguf_type)
        result = subprocess.run([sys.executable, "-m", "engine.export.gguf", str(self.run_dir), "--gguf", gguf_type, "--json"],
                                stdout=subprocess.PIPE, text=True)
        try:
            reply = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            reply = {"error": f"the GGUF export process exited with code {result.returncode}; see {self.run_dir / 'worker.log'}"}
        if "error" in reply:
            return {"gguf_error": reply["error"]}
        return {"gguf_path": reply["path"], "gguf_passed": reply["passed"], "gguf_reason": reply.get("reason") or None,
                "ollama_command": reply.get("ollama_command")}

    def _evaluate(self) -> None:
        """Base against tuned on the eval split (engine.evaluation.evaluate) in a fresh process, as the
        merge: this one carries Unsloth's patches. Its summary becomes the `evaluation` event, and the
        troubleshooting rules see it. A failed or stopped evaluation never fails the trained run."""
        import json
        import subprocess
        import sys

        self.events.emit("status", state="evaluating")
        process = subprocess.Popen([sys.executable, "-m", "engine.evaluation.evaluate", str(self.run_dir), "--json", "--quiet"],
                                   stdout=subprocess.PIPE, text=True)
        output = ""
        while True:
            try:
                output, _ = process.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                if self.stop.requested:  # a stop now skips the evaluation; the adapter is saved
                    process.kill()
                    process.communicate()
                    self.events.emit("evaluation", error="stopped before it finished; run `lora-tui eval` on the run folder")
                    return
        try:
            reply = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            reply = {"error": f"the evaluation process exited with code {process.returncode}; see {self.run_dir / 'worker.log'}"}
        event = self.events.emit("evaluation", **reply)
        diagnostician = self.progress.diagnostician if self.progress is not None else None
        for finding in diagnostician.observe(event) if diagnostician is not None else []:
            self.events.emit("finding", **{key: value for key, value in finding.items() if key != "event"})

    def _save(self, session, model, tokenizer) -> dict:
        """The adapter (PEFT format) or, for full fine-tuning, the whole model: written by rank 0 only.
        Under FSDP every rank takes part in gathering the sharded weights first."""
        target = self.run_dir / (FULL_MODEL_DIR if session.method == "full" else ADAPTER_DIR)
        partial = target.with_name(target.name + ".partial")
        if self.rank.main:
            shutil.rmtree(partial, ignore_errors=True)
        if self.strategy == "fsdp" and self.backend.NAME == "peft":
            from engine.training.fsdp import full_trainable_state

            state = full_trainable_state(model)  # a collective: every rank
            if not self.rank.main:
                return {}
            model.save_pretrained(str(partial), state_dict=state)
        elif self.strategy == "fsdp":
            model.save_pretrained(str(partial))  # Unsloth's FSDP2 save: every rank gathers, rank 0 writes
            if not self.rank.main:
                return {}
        elif not self.rank.main:
            return {}
        else:
            model.save_pretrained(str(partial))
        tokenizer.save_pretrained(str(partial))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        key = "model_dir" if session.method == "full" else "adapter_dir"
        return {key: str(target)}


def trainable_digest(model) -> str:
    """sha256 of what this rank trains, in the adapter file's own names and order (PEFT's state dict
    of the adapter; every trainable parameter for full fine-tuning). Under DDP every rank holds the
    same weights, so every rank's digest equals that of rank 0's adapter file; under FSDP each rank
    digests its own shards."""
    import hashlib

    import torch

    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)
    else:
        state = {name: p for name, p in model.named_parameters() if p.requires_grad}
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        value = value.to_local() if hasattr(value, "to_local") else value
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing is best effort
        pass


def _model_facts(model, session) -> dict:
    """What was actually loaded: parameter counts as PEFT counts them, and 4-bit layers."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    quantized = sum(1 for m in model.modules() if type(m).__name__ in ("Linear4bit", "Params4bit"))
    dtype = next((str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()), None)
    facts = dict(trainable_params=int(trainable), total_params=int(total), load_in_4bit=session.load_in_4bit,
                 quantized_modules=quantized, dtype=dtype, method=session.method)
    # How 4-bit weights are stored: FSDP can shard them only when stored in the compute dtype.
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    storage = config.get("bnb_4bit_quant_storage") if isinstance(config, dict) else getattr(config, "bnb_4bit_quant_storage", None)
    if quantized and storage is not None:
        facts["bnb_4bit_quant_storage"] = str(storage).replace("torch.", "")
    return facts
