"""The tracker HTTP API, onto the bus."""
