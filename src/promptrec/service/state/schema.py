"""The service's own tables, kept beside the catalogue and log on the store's database.

Served lists (``impressions``) and the feedback attributed to them (``attributions``), the
client's idempotency keys, the online counts per arm (``online_totals``, and per minute
``online_series``) and the catalogue's change log that the engines on one store follow.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions(
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    items TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions(user_id, at);
CREATE INDEX IF NOT EXISTS impressions_at ON impressions(at);
CREATE TABLE IF NOT EXISTS attributions(
    event_key TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS attributions_request ON attributions(request_id);
CREATE INDEX IF NOT EXISTS attributions_event ON attributions(request_id, event);
CREATE INDEX IF NOT EXISTS attributions_at ON attributions(at);
CREATE TABLE IF NOT EXISTS idempotency(
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_at ON idempotency(at);
CREATE TABLE IF NOT EXISTS online_totals(
    arm TEXT NOT NULL,
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    impressions BIGINT NOT NULL DEFAULT 0,
    clicks BIGINT NOT NULL DEFAULT 0,
    carts BIGINT NOT NULL DEFAULT 0,
    purchases BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY(arm, model_version, strategy)
);
CREATE TABLE IF NOT EXISTS online_series(
    bucket {float} NOT NULL,
    arm TEXT NOT NULL,
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    impressions BIGINT NOT NULL DEFAULT 0,
    clicks BIGINT NOT NULL DEFAULT 0,
    carts BIGINT NOT NULL DEFAULT 0,
    purchases BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY(bucket, arm, model_version, strategy)
);
CREATE TABLE IF NOT EXISTS catalogue_changes(
    seq {serial},
    item_id TEXT NOT NULL,
    at {float} NOT NULL
);
"""
