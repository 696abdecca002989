"""A TrainerCallback that turns the Trainer's state into events, and honours stop and pause.

It is the only code of ours inside the training loop, so it does little per step: a file check
for STOP / PAUSE and arithmetic at each logging step. With several processes it runs on every rank
and makes them agree once per optimizer step (engine.training.distributed.agree): a stop or pause
seen by any rank applies to all, and tokens/s counts the tokens of all ranks (summed, not rank 0's
count multiplied: ranks' batches differ in length). Only rank 0's writer writes. Tokens are counted by `TokenCounter`, a
wrapper of the training data collator (a sum over the attention mask of each batch, on the CPU:
no device sync per step, unlike the Trainer's own `include_num_input_tokens_seen`).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from pathlib import Path

from transformers import TrainerCallback

from engine.runs.registry import PAUSE_FILE
from engine.training.distributed import agree, gather_per_rank
from engine.troubleshooting.oom import InjectedOOM


class TokenCounter:
    """Wraps the training data collator and counts the real (non-padding) tokens and the samples
    of each batch. The dataloader builds batches ahead of the step that trains them, so a batch's
    counts wait in a queue until `step_done` takes that step's micro-batches: `tokens` and
    `samples` are what has been trained."""

    def __init__(self, collator):
        self.collator = collator
        self.tokens = 0
        self.samples = 0
        self._built: deque[tuple[int, int]] = deque()  # (tokens, samples) of batches not yet trained

    def __call__(self, features):
        batch = self.collator(features)
        mask = batch.get("attention_mask") if hasattr(batch, "get") else None
        ids = batch["input_ids"]
        self._built.append((int(mask.sum()) if mask is not None else int(ids.numel()), int(ids.shape[0])))
        return batch

    def step_done(self, micro_batches: int) -> None:
        """An optimizer step consumed `micro_batches` batches (gradient accumulation); fewer at
        the end of an epoch, where the queue holds only what is left of it."""
        for _ in range(min(micro_batches, len(self._built))):
            tokens, samples = self._built.popleft()
            self.tokens += tokens
            self.samples += samples


def count_training_tokens(trainer) -> TokenCounter:
    """A TokenCounter on the trainer's training batches only: evaluation batches go through the
    same `data_collator` attribute, so the counter is swapped in just while the training
    dataloader is built (which keeps its collate function)."""
    counter = TokenCounter(trainer.data_collator)
    build = trainer.get_train_dataloader

    def get_train_dataloader():
        plain = trainer.data_collator
        trainer.data_collator = counter
        try:
            return build()
        finally:
            trainer.data_collator = plain

    trainer.get_train_dataloader = get_train_dataloader
    return counter


HEARTBEAT_SECONDS = 0.5  # `step` events: at most twice a second, whatever the step rate


class ProgressCallback(TrainerCallback):
    def __init__(self, events, stop_flag, token_counter: TokenCounter, diagnostician=None,
                 batch_size: int = 1, resume_from: str | None = None, strategy: str = "none"):
        self.events = events
        self.stop = stop_flag
        self.tokens = token_counter
        self.diagnostician = diagnostician
        self.run_dir: Path = stop_flag.run_dir
        self.resume_from = resume_from
        self.strategy = strategy
        # Tokens and samples of the whole job (all ranks), and how much of this rank's own count was shared.
        self.job_tokens = self.job_samples = 0
        self._shared_tokens = self._shared_samples = 0
        self.inject = InjectedOOM.from_environment(batch_size)
        self._t0 = self._mark = time.monotonic()
        self._train_seconds = 0.0  # training time since the last log: no evaluation, save or pause
        self._first_step = 0
        self._last_tokens = self._last_samples = 0
        self.stopped_on_request = False
        self.step_in_progress = 0  # the step an out-of-memory error interrupts
        self._heartbeat_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._mark = time.monotonic()
        self._first_step = state.global_step
        self.events.emit(
            "start", total_steps=state.max_steps, num_train_epochs=args.num_train_epochs,
            step=state.global_step, resume_from=self.resume_from, pid=os.getpid(),
            host=socket.gethostname(), world_size=max(int(args.world_size), 1), run_dir=str(self.run_dir),
            gpu=_gpu_name(),  # what the dashboard prices the run by (issue 20)
            **({"strategy": self.strategy} if int(args.world_size) > 1 else {}),
        )
        self._heartbeat_at = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_in_progress = state.global_step + 1
        self.inject.check(self.step_in_progress)

    def on_step_end(self, args, state, control, **kwargs):
        self.tokens.step_done(args.gradient_accumulation_steps)
        now = time.monotonic()
        self._train_seconds += now - self._mark
        self._mark = now
        stop, pause = self._agree(args, self.stop.requested, (self.run_dir / PAUSE_FILE).exists())
        self._heartbeat(state, now)
        if pause and not stop:
            stop = self._pause(state, args)
        if stop:
            # Save a checkpoint at this step, then leave the loop: Trainer saves before it stops.
            control.should_save = True
            control.should_training_stop = True
            self.stopped_on_request = True
        return control

    def _agree(self, args, stop: bool, pause: bool) -> tuple[bool, bool]:
        """Every rank, once per optimizer step: the stop and pause flags of all ranks, and the job's tokens."""
        tokens, samples = self.tokens.tokens - self._shared_tokens, self.tokens.samples - self._shared_samples
        self._shared_tokens, self._shared_samples = self.tokens.tokens, self.tokens.samples
        stop, pause, tokens, samples = agree(stop, pause, tokens, samples, device=args.device)
        self.job_tokens += tokens
        self.job_samples += samples
        return stop, pause

    def _heartbeat(self, state, now: float) -> None:
        """A light `step` event, at most twice a second, so progress and the ETA move every step
        (loss points come with `logging_steps`)."""
        if now - self._heartbeat_at < HEARTBEAT_SECONDS and state.global_step < state.max_steps:
            return
        self._heartbeat_at = now
        elapsed = now - self._t0
        done = max(state.global_step - self._first_step, 1)
        self.events.emit(
            "step", step=state.global_step, total_steps=state.max_steps, elapsed=round(elapsed, 2),
            samples=self.job_samples, tokens=self.job_tokens,
            tokens_per_second=round(self.job_tokens / max(elapsed, 1e-9), 1),
            eta_seconds=round(elapsed / done * max(state.max_steps - state.global_step, 0), 1),
        )

    def _pause(self, state, args) -> bool:
        """Wait while any rank sees PAUSE (all ranks wait together, asking each other twice a second,
        so no rank's collective times out); returns whether a stop was asked meanwhile."""
        self.events.emit("status", state="paused", step=state.global_step)
        paused_at = time.monotonic()
        stop = pause = False
        while True:
            time.sleep(0.5)
            stop, pause = self._agree(args, self.stop.requested, (self.run_dir / PAUSE_FILE).exists())
            if stop or not pause:
                break
        # A pause is not training time: keep the throughput and ETA honest.
        self._t0 += time.monotonic() - paused_at
        self._mark = time.monotonic()
        self.events.emit("status", state="running", step=state.global_step)
        return stop

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        step = state.global_step
        if "eval_loss" in logs:
            event = self.events.emit("eval", step=step, epoch=_round(state.epoch), eval_loss=logs["eval_loss"])
            self._diagnose(event)
        if "loss" not in logs:
            return
        now = time.monotonic()
        # Throughput over the steps' own time: an evaluation or a checkpoint between two logs would
        # otherwise halve it for one line (the ETA below keeps them: they take wall time too).
        window = max(self._train_seconds, 1e-9)
        elapsed = now - self._t0
        done = max(step - self._first_step, 1)
        remaining = max(state.max_steps - step, 0)
        record = dict(
            step=step,
            epoch=_round(state.epoch),
            loss=_float(logs.get("loss")),
            learning_rate=_float(logs.get("learning_rate")),
            grad_norm=_float(logs.get("grad_norm")),
            tokens_per_second=round((self.job_tokens - self._last_tokens) / window, 1),
            samples_per_second=round((self.job_samples - self._last_samples) / window, 3),
            tokens_seen=self.job_tokens,
            elapsed=round(elapsed, 1),
            eta_seconds=round(elapsed / done * remaining, 1),
            total_steps=state.max_steps,
        )
        # Every rank logs the same steps, so this collective lines up: the peak of each process.
        memory = gather_per_rank(_memory_gb(), device=args.device)
        record["memory_gb"] = max(memory)
        if len(memory) > 1:
            record["memory_gb_ranks"] = memory
        self._train_seconds, self._last_tokens, self._last_samples = 0.0, self.job_tokens, self.job_samples
        self._diagnose(self.events.emit("log", **record))

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.events.emit("checkpoint", step=state.global_step, path=str(path))
        self._mark = time.monotonic()  # the save was not training time

    def on_evaluate(self, args, state, control, **kwargs):
        self._mark = time.monotonic()  # nor was the evaluation

    def _diagnose(self, event: dict) -> None:
        if self.diagnostician is None:
            return
        for finding in self.diagnostician.observe(event):
            self.events.emit("finding", **{k: v for k, v in finding.items() if k not in ("event", "time")})


def _float(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else str(value)  # "nan" / "inf" stay visible in JSON


def _round(value):
    return None if value is None else round(float(value), 4)


def _memory_gb() -> float:
    """Peak GPU memory allocated by torch, or the worker's resident memory on the CPU."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**30, 3)


def _gpu_name() -> str | None:
    """This process's GPU as CUDA names it ("NVIDIA GeForce RTX 4090"), or None on a CPU."""
    import torch

    try:
        return torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else None
    except Exception:  # a broken driver must not stop the run over a name
        return None
