"""Session details derived from a start request beyond its body: client address, place, campaign, metadata limits.

Country (and city, where the database has it) comes from an offline database: by
default the GeoLite2 country data that the geoip2fast package ships, or a
MaxMind-format file named by TANDEM_GEOIP_DATABASE. No lookup touches the network.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import structlog

log = structlog.get_logger(__name__)

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

SHIPPED_DATA_FILE = "geoip2fast-ipv6.dat.gz"
"""geoip2fast's country file covering IPv4 and IPv6 (MaxMind GeoLite2 Country data)."""

UTM_PARAMETERS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
MAX_UTM_VALUE_CHARS = 256


@dataclass(frozen=True)
class GeoLocation:
    """ISO 3166-1 alpha-2 country code and English city name; empty strings when unknown."""

    country: str = ""
    city: str = ""


UNKNOWN_PLACE = GeoLocation()


class GeoLocator(Protocol):
    def locate(self, address: Address) -> GeoLocation: ...


# Client address ---------------------------------------------------------------------------


def parse_address(text: str) -> Address | None:
    """Parse an address as proxies write it: bare, `1.2.3.4:port`, `[v6]` or `[v6]:port`; None if invalid."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted_proxies: Sequence[Network]
) -> Address | None:
    """Return the client's address: the TCP peer, or the X-Forwarded-For hop a trusted proxy vouches for.

    When the peer is a trusted proxy, the header is read from right to left and
    the first hop that is not itself a trusted proxy is the client. Hops left
    of it were written by the client and cannot be trusted. An invalid hop
    stops the walk at the last address a trusted proxy wrote.
    """
    address = parse_address(peer) if peer else None
    if address is None or not _is_trusted(address, trusted_proxies):
        return address
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:
            return address
        address = hop_address
        if not _is_trusted(address, trusted_proxies):
            return address
    return address


def _is_trusted(address: Address, trusted_proxies: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted_proxies)


# Place from address -----------------------------------------------------------------------


class NoGeoLocation:
    """Used when TANDEM_GEOIP_ENABLED is false."""

    def locate(self, address: Address) -> GeoLocation:
        return UNKNOWN_PLACE


class ShippedCountryDatabase:
    """Countries from geoip2fast's bundled data file; it has no city names.

    geoip2fast keeps its tables in module globals, so one instance serves the process.
    Loading it added 48 MB of resident memory and took 0.3 s on an idle 2-core machine
    (geoip2fast 1.2.2; 1.2 s while other work loaded the cores).
    """

    def __init__(self) -> None:
        self._lookup = _shipped_database().lookup

    def locate(self, address: Address) -> GeoLocation:
        if not address.is_global:
            return UNKNOWN_PLACE
        code = self._lookup(str(address)).country_code
        # geoip2fast returns "--" for reserved networks and "" or "<…>"-style codes for errors.
        if len(code) == 2 and code.isalpha() and code.isupper():
            return GeoLocation(country=code)
        return UNKNOWN_PLACE


_shipped_lock = threading.Lock()


@functools.cache
def _shipped_database():  # returns geoip2fast.GeoIP2Fast
    with _shipped_lock:
        from geoip2fast import GeoIP2Fast

        database = GeoIP2Fast(verbose=False, geoip2fast_data_file=SHIPPED_DATA_FILE)
        log.info("geoip.loaded", source="geoip2fast", file=SHIPPED_DATA_FILE)
        return database


class MaxMindDatabase:
    """Countries and cities from a MaxMind DB file (GeoIP2/GeoLite2 Country or City, or a compatible one)."""

    def __init__(self, path: Path) -> None:
        import maxminddb

        if not path.is_file():
            raise ValueError(f"The GeoIP database {str(path)!r} does not exist: fix TANDEM_GEOIP_DATABASE or unset it.")
        try:
            self._reader = maxminddb.open_database(str(path))
        except (maxminddb.InvalidDatabaseError, OSError) as exc:
            raise ValueError(
                f"The GeoIP database {str(path)!r} cannot be read ({exc}): point TANDEM_GEOIP_DATABASE at a .mmdb file."
            ) from None
        self._errors = (maxminddb.InvalidDatabaseError, ValueError)
        log.info(
            "geoip.loaded", source="maxminddb", file=str(path), database_type=self._reader.metadata().database_type
        )

    def locate(self, address: Address) -> GeoLocation:
        if not address.is_global:
            return UNKNOWN_PLACE
        try:
            record = self._reader.get(address)
        except self._errors as exc:
            log.warning("geoip.lookup_failed", error=str(exc))
            return UNKNOWN_PLACE
        if not isinstance(record, Mapping):
            return UNKNOWN_PLACE
        country = _nested(record, "country", "iso_code") or _nested(record, "registered_country", "iso_code")
        city = _nested(record, "city", "names", "en")
        return GeoLocation(country=country.upper()[:2], city=city[:128])

    def close(self) -> None:
        self._reader.close()


def _nested(record: Mapping, *path: str) -> str:
    value: object = record
    for key in path:
        if not isinstance(value, Mapping):
            return ""
        value = value.get(key)
    return value if isinstance(value, str) else ""


def open_geo_locator(*, enabled: bool, database: Path | None) -> GeoLocator:
    """Return the locator the settings ask for; raise ValueError for a database file that cannot be used."""
    if not enabled:
        return NoGeoLocation()
    if database is not None:
        return MaxMindDatabase(database)
    return ShippedCountryDatabase()


class ClientLocator:
    """The place of a request's client: its address (X-Forwarded-For only from trusted proxies), then the database."""

    def __init__(self, *, locator: GeoLocator, trusted_proxies: Sequence[Network]) -> None:
        self._locator = locator
        self._trusted_proxies = list(trusted_proxies)

    def locate(self, peer: str | None, forwarded_for: Iterable[str]) -> GeoLocation:
        address = client_address(peer, forwarded_for, self._trusted_proxies)
        return self._locator.locate(address) if address is not None else UNKNOWN_PLACE


# Page and metadata ------------------------------------------------------------------------


def utm_parameters(url: str) -> dict[str, str]:
    """Return the `utm_*` query parameters of `url` (first value of each), cut to 256 characters."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        lowered = name.lower()
        if lowered in UTM_PARAMETERS and lowered not in found:
            found[lowered] = value[:MAX_UTM_VALUE_CHARS]
    return found


def merge_metadata(current: dict[str, str], updates: Mapping[str, str], limit: int) -> int:
    """Apply `updates` to `current` in place, adding new keys only while fewer than `limit` exist.

    Existing keys always take their new value. Returns the number of new keys dropped.
    """
    dropped = 0
    for key, value in updates.items():
        if key in current or len(current) < limit:
            current[key] = value
        else:
            dropped += 1
    return dropped
