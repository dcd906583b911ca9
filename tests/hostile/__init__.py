"""Hostile input: every bad file, option, checkpoint, store and output path a user or an attacker could hand us
(probe.py is the harness), and Hypothesis fuzzing of the readers."""
