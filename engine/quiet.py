"""Keep library chatter (progress bars, deprecation notices) off the person's terminal.

Headless commands call this before importing torch or transformers; the training worker's own
output goes to the run folder's worker.log instead.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # torch's own log setup overrides logger levels at import; this is its switch for "warnings off".
    os.environ.setdefault("TORCH_LOGS", "-torch")
    for name in ("torch", "transformers", "datasets", "huggingface_hub", "accelerate", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
