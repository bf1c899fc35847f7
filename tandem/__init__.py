"""Tandem all in one process, for local use: nats-server, every service and the web files on one port."""
