"""The suite's database setup tells a server that is not there from one that refuses."""

from __future__ import annotations

import socket
import uuid

import asyncpg
import pytest

from conftest import admin_url, connect_admin, connection_error, connection_failure, is_busy, is_unreachable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


async def test_nothing_listening_is_unreachable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"
    error = await connection_error(url)
    assert error is not None and is_unreachable(error) and not is_busy(error)
    assert connection_failure(url, error).startswith(f"PostgreSQL is unreachable at {url}: ")


async def test_a_server_out_of_connection_slots_is_reported_as_it_is(postgres_server: str) -> None:
    # A role allowed no connection gets the server's real "too many
    # connections" error (SQLSTATE 53300), as a full server's clients do.
    role = f"sayiir_test_full_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url())
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        url = admin_url().replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        assert url != admin_url()
        with pytest.raises(asyncpg.TooManyConnectionsError) as raised:
            await asyncpg.connect(url)
        error = raised.value
        assert is_busy(error) and not is_unreachable(error)
        message = connection_failure(url, error)
        assert message.startswith(f"PostgreSQL at {url} refused the connection: TooManyConnectionsError: ")
        assert "too many connections" in message and "unreachable" not in message
        # Waited for (a slot may free up), then the same error surfaces.
        with pytest.raises(asyncpg.TooManyConnectionsError):
            await connect_admin(url, busy_retry_s=0.5)
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_refusal_other_than_busy_is_not_waited_for(postgres_server: str) -> None:
    url = admin_url().rpartition("/")[0] + f"/no_such_database_{uuid.uuid4().hex[:8]}"
    error = await connection_error(url)
    assert isinstance(error, asyncpg.InvalidCatalogNameError)
    assert not is_busy(error) and not is_unreachable(error)
    assert "refused the connection: InvalidCatalogNameError" in connection_failure(url, error)
