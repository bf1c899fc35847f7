"""ICE servers for browsers: STUN, and TURN with coturn's time-limited REST credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac

from tandem_protocol.signal import IceServer

from tandem_signal.settings import SignalSettings


def turn_credential(*, secret: str, user: str, expires_at: int) -> tuple[str, str]:
    """Return coturn's REST username `<expiry>:<user>` and its password, base64(HMAC-SHA1(secret, username)).

    coturn accepts the pair until `expires_at` (seconds since the epoch) when it
    runs with `--use-auth-secret --static-auth-secret=<secret>`.
    """
    username = f"{expires_at}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(settings: SignalSettings, *, peer_id: str, now_seconds: int) -> list[IceServer]:
    """The RTCConfiguration.iceServers for one peer: nothing unless STUN or TURN URLs are configured."""
    servers = []
    if settings.stun_urls:
        servers.append(IceServer(urls=list(settings.stun_urls)))
    secret = settings.turn_secret.get_secret_value()
    if settings.turn_urls and secret:
        username, password = turn_credential(
            secret=secret, user=peer_id, expires_at=now_seconds + settings.turn_credential_ttl_seconds
        )
        servers.append(IceServer(urls=list(settings.turn_urls), username=username, credential=password))
    return servers
