"""Print every row of every table in a stopped Tandem's embedded ClickHouse, as JSON lines.

    python -m tests.privacy.store_dump DATA_DIR

chdb lets one process at a time open its folder, so the leak harness runs this after the server
has exited. String columns are read as bytes; zstd-compressed values are decompressed, so that a
stored replay chunk is searched as the JSON it holds.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

from tandem_runtime.logs import configure_logging
from tandem_sessions.store.driver import ClickHouse

try:
    from compression import zstd  # Python 3.14
except ImportError:
    from backports import zstd

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPED_DATABASES = ("system", "INFORMATION_SCHEMA", "information_schema")
STRING_TYPE = re.compile(r"^(Nullable\()?(LowCardinality\()?(String|FixedString\(\d+\))\)?\)?$")


def readable(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
        if data.startswith(ZSTD_MAGIC):
            try:
                data = zstd.decompress(data)
            except zstd.ZstdError:
                pass
        return data.decode(errors="replace")
    return str(value)


async def dump(data_dir: Path) -> None:
    db = await ClickHouse.open(chdb_path=data_dir / "chdb", threads=1)
    try:
        tables = await db.query(
            "SELECT database, name FROM system.tables"
            " WHERE database NOT IN {skipped:Array(String)} AND NOT is_temporary",
            {"skipped": list(SKIPPED_DATABASES)},
        )
        for database, table in tables:
            columns = await db.query(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {table:String}",
                {"db": database, "table": table},
            )
            as_bytes = {name: "bytes" for name, kind in columns if STRING_TYPE.match(kind)}
            rows = await db.query(f"SELECT * FROM `{database}`.`{table}`", column_formats=as_bytes)
            for row in rows:
                print(json.dumps({"table": f"{database}.{table}", "row": [readable(cell) for cell in row]}))
    finally:
        await db.close()


if __name__ == "__main__":
    configure_logging("warning")  # Log lines go to stderr; stdout holds only rows.
    asyncio.run(dump(Path(sys.argv[1])))
