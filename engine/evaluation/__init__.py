"""The tuned model against its base: generation side by side (`generate.py`, the finish screen's try-it)."""
