"""What `imageapi doctor` asks a PostgreSQL server: its version, whether a write can begin, the
schema version, how embeddings are kept, the database's size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    version: str           # the server's, e.g. "15.20"
    schema: int            # the newest migration applied (0: an empty database)
    embeddings: str        # "vector", "real[]", or "made on first use"
    size_bytes: int


class ProbeError(Exception):
    """The server could not be reached or refused a step: the message says which."""


async def probe(url: str) -> Probe:
    import asyncpg

    from imageapi.core.postgres.migrations import embedding_type, schema_version

    try:
        conn = await asyncpg.connect(url, timeout=10, command_timeout=30)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ProbeError(str(exc)) from None
    try:
        version = str(await conn.fetchval("SHOW server_version")).split()[0]
        async with conn.transaction():
            await conn.execute("CREATE TEMPORARY TABLE doctor_probe (x int) ON COMMIT DROP")
        have = await schema_version(conn)
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        embeddings = await embedding_type(conn, "faces") if have else "made on first use"
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise ProbeError(str(exc)) from None
    finally:
        await conn.close()
    return Probe(version, have, embeddings, size)
