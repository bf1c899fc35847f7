"""Live fan-out of sessions to agents over WebSocket."""
