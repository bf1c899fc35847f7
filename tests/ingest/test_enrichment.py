"""Enrichment of new sessions: place from the client address, software from the User-Agent, campaign and metadata."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from tandem_ingest.app import create_app as create_ingest
from tandem_ingest.enrichment import (
    GeoLocation,
    MaxMindDatabase,
    ShippedCountryDatabase,
    client_address,
    merge_metadata,
    open_geo_locator,
    parse_address,
    utm_parameters,
)
from tandem_ingest.registry import LiveRegistryWriter
from tandem_ingest.settings import IngestSettings
from tandem_ingest.useragent import describe
from tandem_protocol import Project
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.tokens import TokenSigner

from tests.conftest import SECRET_KEY, listen

# Public addresses and the country of the GeoLite2 data that geoip2fast 1.2.2 ships.
KNOWN_COUNTRIES = [
    ("8.8.8.8", "US"),
    ("81.2.69.160", "GB"),
    ("193.0.6.139", "NL"),
    ("133.11.0.1", "JP"),
    ("200.160.2.3", "BR"),
    ("195.154.0.1", "FR"),
    ("2001:4860:4860::8888", "US"),
    ("2a00:1450:4001::1", "DE"),
]

USER_AGENTS = [
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ("Chrome", "124.0", "Linux", "", "desktop"),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        ("Firefox", "125.0", "Windows", "10", "desktop"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
        ("Edge", "124.0", "Mac OS X", "10.15", "desktop"),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        ("Mobile Safari", "17.4", "iOS", "17.4", "mobile"),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1",
        ("Mobile Safari", "16.6", "iOS", "16.6", "tablet"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        ("Chrome Mobile", "124.0", "Android", "14", "mobile"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Safari/537.36",
        ("Samsung Internet", "24.0", "Android", "13", "tablet"),
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ("Googlebot", "2.1", "", "", "bot"),
    ),
    ("", ("", "", "", "", "")),
]

TRUSTED = [ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32"), ip_network("fd00::/8")]


@pytest.mark.parametrize(("address", "country"), KNOWN_COUNTRIES)
def test_shipped_database_country(address, country):
    place = ShippedCountryDatabase().locate(ip_address(address))
    assert place.country == country
    assert place.city == ""


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.7", "::1", "203.0.113.5", "fd00::1"])
def test_shipped_database_private_unknown(address):
    assert ShippedCountryDatabase().locate(ip_address(address)) == GeoLocation()


def test_geoip_disabled_knows_nothing():
    locator = open_geo_locator(enabled=False, database=None)
    assert locator.locate(ip_address("8.8.8.8")) == GeoLocation()


def write_city_database(path: Path) -> Path:
    """Write a small MaxMind DB whose records differ from the shipped data, so that a test sees which one was used."""
    writer = MMDBWriter(ip_version=6, database_type="Tandem-Test-City", languages=["en"], ipv4_compatible=True)
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {"country": {"iso_code": "FR", "names": {"en": "France"}}, "city": {"names": {"en": "Lyon"}}},
    )
    writer.insert_network(IPSet(["2a00:1450::/32"]), {"registered_country": {"iso_code": "JP"}})
    writer.to_db_file(str(path))
    return path


def test_maxmind_database_city(tmp_path):
    database = MaxMindDatabase(write_city_database(tmp_path / "city.mmdb"))
    assert database.locate(ip_address("81.2.69.160")) == GeoLocation(country="FR", city="Lyon")
    assert database.locate(ip_address("2a00:1450:4001::1")) == GeoLocation(country="JP", city="")
    assert database.locate(ip_address("8.8.8.8")) == GeoLocation()
    assert database.locate(ip_address("10.0.0.1")) == GeoLocation()


def test_maxmind_database_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        open_geo_locator(enabled=True, database=tmp_path / "nope.mmdb")


def test_maxmind_database_not_mmdb(tmp_path):
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(b"not a database")
    with pytest.raises(ValueError, match="cannot be read"):
        MaxMindDatabase(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("81.2.69.160", "81.2.69.160"),
        (" 81.2.69.160:4433 ", "81.2.69.160"),
        ("[2a00:1450::1]:443", "2a00:1450::1"),
        ("2a00:1450::1", "2a00:1450::1"),
        ("unknown", None),
        ("", None),
    ],
)
def test_parse_address_forms(text, expected):
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # An untrusted peer's header is ignored: anyone can write it.
        ("81.2.69.160", ["8.8.8.8"], "81.2.69.160"),
        # A trusted proxy vouches for the hop it saw.
        ("10.0.0.2", ["8.8.8.8"], "8.8.8.8"),
        # The client wrote the leftmost hop itself; the rightmost untrusted hop is the client.
        ("10.0.0.2", ["1.1.1.1, 8.8.8.8, 10.0.0.9"], "8.8.8.8"),
        # Several headers are read as one list, in order.
        ("127.0.0.1", ["1.1.1.1", "8.8.8.8"], "8.8.8.8"),
        # Only proxies in the header: the leftmost is the best guess.
        ("10.0.0.2", ["10.0.0.7, 10.0.0.9"], "10.0.0.7"),
        # Garbage stops the walk at the last address a trusted proxy wrote.
        ("10.0.0.2", ["8.8.8.8, garbage"], "10.0.0.2"),
        ("fd00::2", ["2a00:1450::1"], "2a00:1450::1"),
        ("10.0.0.2", [], "10.0.0.2"),
        (None, ["8.8.8.8"], None),
    ],
)
def test_client_address_trust(peer, forwarded, expected):
    address = client_address(peer, forwarded, TRUSTED)
    assert (str(address) if address else None) == expected


@pytest.mark.parametrize(("user_agent", "expected"), USER_AGENTS)
def test_user_agent_description(user_agent, expected):
    software = describe(user_agent)
    assert (software.browser, software.browser_version, software.os, software.os_version, software.device) == expected


def test_utm_parameters_from_url():
    url = "https://shop.test/p?utm_source=news&UTM_MEDIUM=email&utm_campaign=spring%20sale&utm_source=second&q=x"
    assert utm_parameters(url) == {"utm_source": "news", "utm_medium": "email", "utm_campaign": "spring sale"}
    assert utm_parameters("https://shop.test/") == {}
    assert utm_parameters("http://[broken") == {}


def test_merge_metadata_limit():
    metadata = {"plan": "free"}
    dropped = merge_metadata(metadata, {"plan": "pro", "team": "a", "region": "eu", "tier": "1"}, 2)
    assert metadata == {"plan": "pro", "team": "a"}
    assert dropped == 2
    assert merge_metadata(metadata, {"team": "b"}, 2) == 0
    assert metadata["team"] == "b"


# Through the HTTP API --------------------------------------------------------------------


async def serve_ingest(nats_client, **settings) -> tuple[web.AppRunner, str, web.Application]:
    await ProjectDirectory(js=nats_client.jetstream()).put(Project(id="demo", key="demo-key"))
    ingest = create_ingest(
        settings=IngestSettings(**settings), nc=nats_client, signer=TokenSigner(secret_key=SECRET_KEY)
    )
    root = web.Application()
    root.add_subapp("/ingest", ingest)
    runner = web.AppRunner(root)
    await runner.setup()
    port = await listen(runner)
    return runner, f"http://127.0.0.1:{port}", ingest


def registry_of(ingest: web.Application) -> LiveRegistryWriter:
    return next(value for value in ingest.values() if isinstance(value, LiveRegistryWriter))


async def start(base_url: str, *, headers=None, **body) -> dict:
    request = {"projectKey": "demo-key", "tabId": "tab-1", **body}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/ingest/v1/web/start", json=request, headers=headers or {}) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def test_start_enriches_session(nats_client, tmp_path):
    runner, url, ingest = await serve_ingest(
        nats_client, trusted_proxies=["127.0.0.1/32"], geoip_database=write_city_database(tmp_path / "city.mmdb")
    )
    try:
        started = await start(
            url,
            headers={"X-Forwarded-For": "81.2.69.160", "User-Agent": USER_AGENTS[3][0]},
            url="https://shop.test/?utm_source=news&utm_medium=email",
            referrer="https://search.test/",
            screen={"width": 390, "height": 844},
            timezone="Europe/Paris",
            language="fr-FR",
        )
        session = await registry_of(ingest).get("demo", started["sessionID"])
    finally:
        await runner.cleanup()
    assert (session.country, session.city) == ("FR", "Lyon")
    assert (session.browser, session.os, session.device) == ("Mobile Safari", "iOS", "mobile")
    assert (session.utm_source, session.utm_medium, session.utm_campaign) == ("news", "email", "")
    assert session.referrer == "https://search.test/"
    assert (session.screen.width, session.screen.height) == (390, 844)
    assert (session.timezone, session.language) == ("Europe/Paris", "fr-FR")


async def test_start_ignores_untrusted_forwarded_for(nats_client):
    runner, url, ingest = await serve_ingest(nats_client)
    try:
        started = await start(url, headers={"X-Forwarded-For": "8.8.8.8"})
        session = await registry_of(ingest).get("demo", started["sessionID"])
    finally:
        await runner.cleanup()
    assert session.country == ""


async def test_start_drops_extra_metadata(nats_client):
    runner, url, ingest = await serve_ingest(nats_client, max_metadata_keys=5, project_max_metadata_keys={"demo": 2})
    try:
        started = await start(url, metadata={"plan": "pro", "team": "a", "region": "eu"})
        session = await registry_of(ingest).get("demo", started["sessionID"])
    finally:
        await runner.cleanup()
    assert session.metadata == {"plan": "pro", "team": "a"}
