"""The store: the catalogue and the behaviour log, in an SQLite file or a PostgreSQL database.

* :class:`Store` (:mod:`promptrec.store.store`): ingest, add events, upsert and delete items,
  read everything back as a :class:`~promptrec.data.dataset.Dataset`;
* :class:`Event` (:mod:`promptrec.store.events`): one behaviour event, and its checks;
* :mod:`promptrec.store.database`: the one connection and its transactions, SQLite or
  PostgreSQL;
* :mod:`promptrec.store.catalogue`, :mod:`promptrec.store.log`: the SQL of items and of events,
  for whoever writes them together with rows of their own in one transaction (the service,
  whose own state lives in :mod:`promptrec.service.state`).
"""

from promptrec.store.database import Database, is_postgres_url, redact_url
from promptrec.store.events import Event, EventWrite, event_keys, new_event
from promptrec.store.items import stored_text
from promptrec.store.log import UnknownItemError
from promptrec.store.store import IngestReport, Store

__all__ = [
    "Database",
    "Event",
    "EventWrite",
    "IngestReport",
    "Store",
    "UnknownItemError",
    "event_keys",
    "is_postgres_url",
    "new_event",
    "redact_url",
    "stored_text",
]
