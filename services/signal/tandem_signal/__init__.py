"""WebRTC signalling and consent for calls and remote control."""
