"""A large catalogue's text space is kept on disk row by row: a restart reads it back, a changed
catalogue renders and encodes only its changed rows, and what is read equals what is computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset
from promptrec.encoders.hashing import HashingEncoder
from promptrec.scorers import TextSpace
from promptrec.scorers.space_cache import SpaceCache, row_keys


class CountingEncoder(HashingEncoder):
    """The hashing encoder, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        super().__init__(64)
        self.encoded: list[str] = []

    def encode(self, texts, **kwargs):
        self.encoded.extend(texts)
        return super().encode(texts, **kwargs)


def fitted(data: Dataset, encoder, kept: bool) -> TextSpace:
    space = TextSpace(encoder)
    space.keep_on_disk_from = 0 if kept else None
    return space.fit(data)


def assert_same(a: TextSpace, b: TextSpace) -> None:
    assert list(a.texts) == list(b.texts)
    assert np.array_equal(a.vectors, b.vectors)
    for name in ("labels", "categories", "brands", "genres"):
        assert list(getattr(a.catalog, name)) == list(getattr(b.catalog, name)), name


@pytest.mark.parametrize("name", ["beauty_slice", "ml100k"])
def test_a_kept_space_reads_back_what_was_computed(name, request, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PROMPTREC_CACHE_DIR", str(tmp_path))
    data = request.getfixturevalue(name)
    computed = fitted(data, CountingEncoder(), kept=False)
    encoder = CountingEncoder()
    first = fitted(data, encoder, kept=True)  # nothing saved yet: computed, then saved
    assert len(encoder.encoded) == data.n_items
    assert_same(first, computed)
    again = CountingEncoder()
    second = fitted(data, again, kept=True)
    assert again.encoded == []  # every row read back
    assert_same(second, computed)
    # the saved rows can be grown in place like computed ones (a service adds items)
    more = second.edited(*data.edited(data.items.iloc[:1].assign(item_id="new-item")))
    assert len(more.vectors) == data.n_items + 1


def test_processes_reading_one_copy_share_its_pages(beauty_slice, tmp_path, monkeypatch) -> None:
    """A space read back serves the saved file's pages (mapped, not copied: the workers of a
    service share them); rows it appends are its own, and the file is never written."""
    monkeypatch.setenv("PROMPTREC_CACHE_DIR", str(tmp_path))
    computed = fitted(beauty_slice, CountingEncoder(), kept=True)
    [saved] = tmp_path.glob("spaces/*/*/vectors.npy")
    before = saved.read_bytes()
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()}
    assert str(saved) in mapped  # the writer serves the copy it wrote, too
    reader = fitted(beauty_slice, CountingEncoder(), kept=True)
    assert reader.content_key == computed.content_key is not None
    data, added = beauty_slice.edited(beauty_slice.items.iloc[:1].assign(item_id="new-item"))
    grown = reader.edited(data, added)
    assert grown.content_key is None  # its new row is nowhere on disk
    assert np.array_equal(grown.vectors[-1], grown.vectors[0]) and grown.vectors[-1].any()
    assert saved.read_bytes() == before
    again = fitted(beauty_slice, CountingEncoder(), kept=True)
    assert_same(again, computed)
    assert len(again.vectors) == beauty_slice.n_items
    # another catalogue, another key
    other = Dataset(beauty_slice.items.iloc[1:], beauty_slice.events)
    assert fitted(other, CountingEncoder(), kept=True).content_key != computed.content_key


def test_a_changed_catalogue_computes_only_its_changed_rows(beauty_slice, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTREC_CACHE_DIR", str(tmp_path))
    fitted(beauty_slice, CountingEncoder(), kept=True)
    items = beauty_slice.items.copy()
    items.loc[items.index[5], "title"] = "Crimson Velvet Nail Polish, long-lasting"
    extra = items.iloc[:1].assign(item_id="brand-new", title="Argan Oil Hair Mask")
    changed = Dataset(pd.concat([extra, items.iloc[1:]], ignore_index=True), beauty_slice.events)
    encoder = CountingEncoder()
    kept = fitted(changed, encoder, kept=True)
    assert sorted(encoder.encoded) == sorted(
        [kept.texts[0], kept.texts[5]]  # the new row and the changed one (row 0 moved out)
    )
    assert "Crimson Velvet" in kept.texts[5] and "Argan Oil" in kept.texts[0]
    assert_same(kept, fitted(changed, CountingEncoder(), kept=False))
    # the copy now holds the changed catalogue: a restart computes nothing
    again = CountingEncoder()
    fitted(changed, again, kept=True)
    assert again.encoded == []


def test_a_damaged_copy_is_computed_again(beauty_slice, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PROMPTREC_CACHE_DIR", str(tmp_path))
    computed = fitted(beauty_slice, CountingEncoder(), kept=True)
    for vectors in tmp_path.glob("spaces/*/*/vectors.npy"):
        short = vectors.read_bytes()[:100]
        vectors.unlink()  # a new file: the space computed above maps the old one
        vectors.write_bytes(short)  # cut short
    encoder = CountingEncoder()
    assert_same(fitted(beauty_slice, encoder, kept=True), computed)
    assert len(encoder.encoded) == beauty_slice.n_items


def test_rows_are_keyed_by_content_and_copies_by_encoder_and_template(beauty_slice) -> None:
    items = beauty_slice.items
    keys = row_keys(items)
    assert keys.shape == (len(items), 2) and len(np.unique(keys[:, 0])) == len(items)
    assert np.array_equal(row_keys(items.iloc[::-1].reset_index(drop=True)), keys[::-1])
    assert np.array_equal(row_keys(items[list(reversed(items.columns))]), keys)  # column order
    changed = items.copy()
    changed.loc[changed.index[0], "categories"] = None  # a list becomes missing
    assert (row_keys(changed) != keys).any(axis=1).tolist() == [True] + [False] * (len(items) - 1)
    folders = {
        SpaceCache(enc, template, items.dtypes).folder
        for enc in ("hashing-64", "all-MiniLM-L6-v2")
        for template in ("item_product", "item_generic")
    }
    assert len(folders) == 4
