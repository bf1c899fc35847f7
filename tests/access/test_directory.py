"""The project directory on a real nats-server: every key listed, and a new project found at once."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NatsClient
from tandem_protocol import Project, encode, subjects
from tandem_runtime.directory import ProjectDirectory, bucket_keys

pytestmark = pytest.mark.asyncio


async def test_bucket_keys_lists_every_key(nats_client: NatsClient):
    """nats-py's KeyValue.keys() reported an empty bucket in about 2% of these listings."""
    js = nats_client.jetstream()
    kv = await js.key_value(subjects.PROJECTS_BUCKET)
    written: list[str] = []
    for index in range(300):
        key = f"key-{index:03d}"
        await kv.create(key, b"{}")
        written.append(key)
        assert await bucket_keys(js, subjects.PROJECTS_BUCKET) == written, f"after {index + 1} keys"
    await kv.delete(written[0])
    assert await bucket_keys(js, subjects.PROJECTS_BUCKET) == written, "a deleted key is listed; its get() fails"


async def test_bucket_keys_of_empty_bucket(nats_client: NatsClient):
    assert await bucket_keys(nats_client.jetstream(), subjects.AGENTS_BUCKET) == []


class PausedDirectory(ProjectDirectory):
    """Holds each bucket read after it has read, so a test can change the bucket in between."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.read = asyncio.Event()
        self.resume = asyncio.Event()

    async def all(self) -> list[Project]:
        projects = await super().all()
        self.read.set()
        await self.resume.wait()
        return projects


async def test_project_created_during_a_read_is_found(nats_client: NatsClient):
    """A lookup that joins a bucket read begun before its project existed reads again."""
    js = nats_client.jetstream()
    writer = ProjectDirectory(js=js)
    await writer.create(Project(id="old", key="old-key"))
    reader = PausedDirectory(js=js)

    earlier = asyncio.create_task(reader.by_id("old"))
    await asyncio.wait_for(reader.read.wait(), timeout=5)
    await writer.create(Project(id="new", key="new-key", session_confirm=True))
    later = asyncio.create_task(reader.by_id("new"))
    await asyncio.sleep(0.05)
    reader.resume.set()

    assert (await asyncio.wait_for(earlier, timeout=5)).id == "old"
    found = await asyncio.wait_for(later, timeout=5)
    assert found is not None, "the project created while the first read was under way"
    assert found.session_confirm is True
    assert (await reader.by_id("new")) is not None, "no miss is remembered for it either"


async def test_duplicate_id_fails_closed(nats_client: NatsClient):
    """Two entries with one id (two creations that raced) make the id unknown rather than pick one."""
    js = nats_client.jetstream()
    kv = await js.key_value(subjects.PROJECTS_BUCKET)
    await kv.create("dup-key-a", encode(Project(id="dup", key="dup-key-a", session_confirm=True)))
    await kv.create("dup-key-b", encode(Project(id="dup", key="dup-key-b", session_confirm=False)))
    assert await ProjectDirectory(js=js).by_id("dup") is None


async def test_concurrent_creations_one_id(nats_client: NatsClient):
    directory = ProjectDirectory(js=nats_client.jetstream())
    results = await asyncio.gather(
        *(directory.create(Project(id="race", key=f"race-key-{index}")) for index in range(6)),
        return_exceptions=True,
    )
    created = [result for result in results if result is None]
    assert len(created) <= 1, results
    assert len([p for p in await directory.all() if p.id == "race"]) == len(created)
