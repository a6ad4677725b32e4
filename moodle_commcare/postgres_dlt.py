"""dlt's credentials for a PostgreSQL warehouse (apart from postgres.py: importing dlt is slow, and only the
extract needs it). No `from __future__ import annotations` here: dlt reads the class's annotations at runtime."""

from typing import Any, Optional

from dlt.common.configuration import configspec
from dlt.common.typing import TSecretStrValue
from dlt.destinations.impl.postgres.configuration import PostgresCredentials

from .postgres import PgSettings


@configspec(init=False)
class _Credentials(PostgresCredentials):
    """dlt requires a password; libpq does not (trust, peer, ~/.pgpass, PGPASSWORD), so it may be absent here and
    libpq finds it as it would for psql."""

    password: Optional[TSecretStrValue] = None  # type: ignore[assignment]


def dlt_credentials(settings: PgSettings) -> Any:
    """The database's credentials for dlt, every session in UTC."""
    credentials = _Credentials()
    credentials.database = settings.dbname
    credentials.username = settings.user
    credentials.password = settings.password  # type: ignore[assignment]
    credentials.host = settings.host
    credentials.port = settings.port
    credentials.session_timezone = "UTC"
    credentials.query = {"sslmode": settings.sslmode}
    credentials.resolve()
    return credentials
