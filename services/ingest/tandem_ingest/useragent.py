"""Browser, OS and device type from a User-Agent header, with ua-parser."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ua_parser import parse


@dataclass(frozen=True)
class ClientSoftware:
    browser: str
    browser_version: str
    os: str
    os_version: str
    device: str


@functools.lru_cache(maxsize=4096)
def describe(user_agent: str) -> ClientSoftware:
    """Parse a User-Agent string; unknown parts are empty strings. `device` is desktop, mobile, tablet, bot or empty."""
    result = parse(user_agent)
    agent, system, device = result.user_agent, result.os, result.device
    return ClientSoftware(
        browser=agent.family if agent else "",
        browser_version=_version(agent.major, agent.minor) if agent else "",
        os=system.family if system else "",
        os_version=_version(system.major, system.minor) if system else "",
        device=_device_type(user_agent, device.family if device else ""),
    )


def _version(major: str | None, minor: str | None) -> str:
    if not major:
        return ""
    return f"{major}.{minor}" if minor else major


def _device_type(user_agent: str, device_family: str) -> str:
    if not user_agent.strip():
        return ""
    lowered = user_agent.lower()
    if device_family == "Spider":
        return "bot"
    if "ipad" in lowered or "tablet" in lowered or ("android" in lowered and "mobile" not in lowered):
        return "tablet"
    if "mobi" in lowered or "iphone" in lowered:
        return "mobile"
    return "desktop"
