"""Getting a finished run out: the adapter merged into its base (`merge.py`), and checked GGUF files
with an Ollama Modelfile (`gguf.py`, `modelfile.py`; llama.cpp itself from `llama_cpp.py`).

Each export runs as its own process (`python -m engine.export merge|gguf RUN_DIR`, `lora-tui export`), never in the UI.
"""
