"""Getting a finished run out: the adapter merged into its base (`merge`), and GGUF files.

Each export runs as its own process (`python -m engine.export merge|gguf RUN_DIR`), never in the UI.
"""
