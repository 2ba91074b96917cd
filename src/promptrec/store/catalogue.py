"""The catalogue's SQL: items upserted and deleted under their id, in insertion order.

Like :mod:`promptrec.store.log`, the writes take an open transaction, so that a caller can
record other rows in the same commit (the service logs each change it makes so).
"""

from __future__ import annotations

import time

from promptrec.store import copies
from promptrec.store.database import Database

UPSERT = (
    "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT(item_id) DO UPDATE SET fields=excluded.fields, updated_at=excluded.updated_at"
)


def upsert_item(db: Database, item_id: str, text: str) -> bool:
    """Store an item's fields (:func:`~promptrec.store.items.item_row`); True when it is new."""
    existed = db.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone()
    db.execute(UPSERT, (item_id, text, time.time()))
    return existed is None


def delete_item(db: Database, item_id: str) -> bool:
    """Remove an item, its events and its embedding records; True when it existed. The log's
    copy on disk goes too, once the transaction commits."""
    copies.discard_log(db)
    db.execute("DELETE FROM embeddings WHERE item_id = ?", (str(item_id),))
    return db.execute("DELETE FROM items WHERE item_id = ?", (str(item_id),)).rowcount > 0


def item_text(db: Database, item_id: str) -> str | None:
    """An item's stored fields as JSON text (None when it is not stored)."""
    rows = db.read("SELECT fields FROM items WHERE item_id = ?", (str(item_id),))
    return rows[0][0] if rows else None


def all_items(db: Database) -> list[tuple[str, str]]:
    """Every ``(item_id, fields JSON)``, in the order the items were first stored."""
    return db.read(f"SELECT item_id, fields FROM items ORDER BY {db.item_order}")
