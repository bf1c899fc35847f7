"""The settings table in docs/OPERATIONS.md matches the settings classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from tandem_runtime.settings import ServiceSettings

from tests.deploy.conftest import load_script

settings_table = load_script("settings_table")


def test_settings_table_up_to_date():
    document = settings_table.OPERATIONS.read_text()
    assert settings_table.updated(document) == document, (
        "docs/OPERATIONS.md has an outdated settings table: run `python deploy/settings_table.py`."
    )


def test_settings_table_lists_every_variable():
    table = settings_table.table()
    for _, settings_class in settings_table.SECTIONS:
        for field in settings_class.model_fields:
            assert f"`TANDEM_{field.upper()}`" in table, field


def test_settings_table_shows_own_fields():
    class ExampleSettings(ServiceSettings):
        port: int = Field(default=9999, description="Port of the example.")
        token: SecretStr = Field(default=SecretStr(""), description="A <secret> | with a bar.")
        folder: Path = Field(default=settings_table.REPOSITORY / "x", description="A folder.")

    assert settings_table.own_fields(ExampleSettings) == ["port", "token", "folder"]
    rows = settings_table.rows(ExampleSettings, ["token", "folder"])
    assert rows[2] == "| `TANDEM_TOKEN` | (empty) | A &lt;secret&gt; \\| with a bar. |"
    assert rows[3] == "| `TANDEM_FOLDER` | `<repository>/x` | A folder. |"


def test_settings_table_needs_markers():
    with pytest.raises(SystemExit, match="lacks the markers"):
        settings_table.updated("# No markers here\n")
