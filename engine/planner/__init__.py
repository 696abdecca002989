"""The planner: what the hardware is, what the model is made of, what a run would cost in memory,
and what to recommend. Reads configs only; never loads weights.

hardware.py       GPUs through NVML, CPU, RAM, disk; the GPU catalogue
architecture.py   the model built on the meta device: parameters, linear modules
target_modules.py LoRA target-module presets and the trainable-parameter count
memory.py         the peak-memory estimate and its parts
recommend.py      the method, rank, batch and checkpointing that fit, and why
plan.py           `lora-tui plan`: all of the above as one report
"""
