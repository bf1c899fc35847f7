"""Recorded sessions: storage, search, replay, and the agents HTTP API."""
