"""Controller state stores: where each group's observations are kept across runs.

* :class:`InMemoryControllerStore`: one process (the default).
* :class:`SqliteControllerStore`: one machine, many processes (one SQLite file).
* :class:`PostgresControllerStore`: a fleet, on PostgreSQL through ``psycopg`` (the
  ``[postgres]`` extra), with one total order of each group's observations.
* :class:`BaseStoreControllerStore`: a fleet, over LangGraph's ``BaseStore``
  (``PostgresStore``, ``RedisStore``, ...).

All four implement :class:`ControllerStore` and pass the same contract tests.
"""

from __future__ import annotations

from langgraph_capsules.stores._base import ControllerStore
from langgraph_capsules.stores._langgraph import BaseStoreControllerStore
from langgraph_capsules.stores._memory import InMemoryControllerStore
from langgraph_capsules.stores._postgres import POSTGRES_SCHEMA_VERSION, PostgresControllerStore
from langgraph_capsules.stores._sqlite import SQLITE_SCHEMA_VERSION, SqliteControllerStore

__all__ = [
    "POSTGRES_SCHEMA_VERSION",
    "SQLITE_SCHEMA_VERSION",
    "BaseStoreControllerStore",
    "ControllerStore",
    "InMemoryControllerStore",
    "PostgresControllerStore",
    "SqliteControllerStore",
]
