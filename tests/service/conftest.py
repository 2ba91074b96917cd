"""A service on a real slice of amazon-beauty: a store, an engine and a client per test module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from promptrec.service.app import create_app
from promptrec.service.config import ArmSpec, EngineConfig
from promptrec.service.engine import Engine
from promptrec.service.security import ApiKeys
from promptrec.store import Store

KEY = "test-key"  # the tests' API key


def _make_client(
    store: Store, arms: list[ArmSpec] | None = None, **options
) -> tuple[Engine, TestClient]:
    config = EngineConfig(arms=arms or [ArmSpec("main", "mean-of-items")], **options)
    engine = Engine(store, config)
    app = create_app(engine, ApiKeys([KEY]), max_body_bytes=64 * 1024)
    return engine, TestClient(app)


@pytest.fixture
def make_client():
    """``make_client(store, arms, **EngineConfig options) -> (engine, TestClient)``."""
    return _make_client


@pytest.fixture
def store(beauty_slice, tmp_path) -> Iterator[Store]:
    """A fresh store holding the slice."""
    with Store(tmp_path / "service.db") as s:
        s.ingest(beauty_slice, source="amazon-beauty-slice")
        yield s


@pytest.fixture
def client(store) -> Iterator[TestClient]:
    engine, client = _make_client(store)
    with client:
        yield client
    engine.close()


@pytest.fixture(scope="module")
def slice_files(beauty_slice, tmp_path_factory) -> tuple[Path, Path]:
    """The slice as files (catalog.jsonl, events.csv) for `promptrec serve`."""
    root = tmp_path_factory.mktemp("slice")
    catalog = root / "catalog.jsonl"
    with catalog.open("w") as fh:
        for rec in beauty_slice.items.to_dict("records"):
            fh.write(json.dumps({k: v for k, v in rec.items() if v == v}) + "\n")
    events = root / "events.csv"
    beauty_slice.events[["user_id", "item_id", "timestamp"]].to_csv(events, index=False)
    return catalog, events
