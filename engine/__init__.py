"""lora-tui's engine: everything that works without a terminal.

Hardware probing, model inspection, memory estimates, dataset intake, the session file, the
training worker, diagnostics and export. Nothing here imports Textual.
"""

__version__ = "0.1.0"
