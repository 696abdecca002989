"""lora-tui's Textual front end and its command line.

Nothing here imports torch, transformers or Unsloth at module import time: the first screen must
appear fast. Heavy work happens in the engine, in workers or in a separate training process.
"""
