"""Troubleshooting: what a run's events say went wrong, and the fixes offered for it.

diagnostics.py  rules over the event stream: no decrease, overfitting, NaN, divergence
remedies.py     each finding's fixes as session changes
oom.py          the whole out-of-memory path: recognising it, the finding, the retry
"""
