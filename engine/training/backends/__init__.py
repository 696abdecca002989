"""Training backends: each loads the model and applies the session's method.

`unsloth` (FastLanguageModel, also on CPU through its own CPU backend) and `peft` (transformers +
bitsandbytes + PEFT, the standard recipe). A backend module is imported only inside the worker
process that uses it: importing unsloth patches transformers and TRL for the whole process.
"""

BACKENDS = ("unsloth", "peft")


def load_backend(name: str):
    if name == "unsloth":
        from engine.training.backends import unsloth_backend as module
    elif name == "peft":
        from engine.training.backends import peft_backend as module
    else:
        raise ValueError(f"unknown backend {name!r}")
    return module
