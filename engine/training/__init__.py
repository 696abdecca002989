"""Training: the supervisor that launches and watches a run, and the worker process that trains.

supervisor.py  `lora-tui --replay`: starts the worker, forwards stops, falls back, retries OOM
preflight.py   `--dry-run`: everything a run needs, checked without training
worker.py      `python -m engine.training.worker RUN_DIR`: the training process
run.py         one run inside the worker: load, prepare, train, save
args.py        the session's training block as TRL's SFTConfig
callback.py    the Trainer callback that writes events and obeys stop / pause
backends/      unsloth (FastLanguageModel) and peft (transformers + PEFT + bitsandbytes)
"""
