"""The tables of the catalogue and the behaviour log (the service keeps its own state in tables
of its own: :mod:`promptrec.service.state.schema`).

Written once for both databases with the words of :class:`~promptrec.store.database.Database`
(``{serial}``, ``{float}``, ``{item_order}``).
"""

from __future__ import annotations

#: 2: searches; 3 and 4: tables of the service's state (see promptrec.service.state.schema)
SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items(
    item_id TEXT PRIMARY KEY,
    fields TEXT NOT NULL,
    updated_at {float} NOT NULL{item_order}
);
CREATE TABLE IF NOT EXISTS events(
    id {serial},
    event_key TEXT UNIQUE NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id) ON DELETE CASCADE,
    timestamp {float} NOT NULL,
    event TEXT NOT NULL,
    value {float},
    query TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id);
CREATE INDEX IF NOT EXISTS events_item ON events(item_id);
CREATE TABLE IF NOT EXISTS searches(
    id {serial},
    user_id TEXT NOT NULL,
    query TEXT NOT NULL,
    timestamp {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS searches_user ON searches(user_id);
CREATE TABLE IF NOT EXISTS ingests(
    file_hash TEXT,
    path TEXT,
    kind TEXT,
    rows INTEGER,
    at {float}
);
CREATE TABLE IF NOT EXISTS embeddings(
    model TEXT NOT NULL,
    item_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    PRIMARY KEY(model, item_id)
);
"""
