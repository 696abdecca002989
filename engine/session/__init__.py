"""The session: one JSON file that holds every choice of a run.

schema.py  the pydantic models (LoraConfig / SFTConfig field names), load and save
edits.py   the one way to change a session (`with_changes`), presets, portable paths
draft.py   the wizard's autosaved draft; kept free of the schema import for a fast first screen

This package's own import is light on purpose: import the module you need.
"""
