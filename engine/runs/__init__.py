"""Run folders, seen from outside the worker: the event stream, launching, stopping, listing.

events.py          events.jsonl: writing, reading, tailing
registry.py        launch a run in the background, request stop / pause, list known runs
progress_lines.py  events as readable lines for the headless replay
"""
