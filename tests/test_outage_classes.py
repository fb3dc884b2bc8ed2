"""Which database errors are an outage (503 unavailable) rather than a bug (500)."""

from __future__ import annotations

import asyncpg
import pytest

from app.api.errors import is_database_outage


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError(
            "terminating connection due to administrator command"
        ),
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
    ],
)
def test_connection_level_failures_are_outages(exc: BaseException) -> None:
    assert is_database_outage(exc)


def test_a_bad_statement_is_not_an_outage() -> None:
    assert not is_database_outage(asyncpg.exceptions.UndefinedColumnError("no such column"))
