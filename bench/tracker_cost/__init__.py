"""Tracker cost benchmark: run it with `.venv/bin/python -m bench.tracker_cost`; see __main__.py."""
