"""The lexical index's compact base: built at once, saved, memory-mapped and shared, with rows
appended after it; every score that of an index built afresh."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from promptrec.scorers import postings
from promptrec.scorers.postings import LexicalIndex

QUERIES = ("nail polish", "red nail polish", "shampoo for dry hair", "opi", "argan oil oil")


@pytest.fixture(scope="module")
def texts(beauty) -> list[str]:
    """Real item texts: amazon-beauty's titles with their brand and categories."""
    items = beauty.items.head(3000)
    paths = items["categories"].map(lambda p: " ".join(p) if isinstance(p, list) else "")
    return (items["title"] + " " + items["brand"].fillna("") + " " + paths).tolist()


def _grown(texts: list[str]) -> LexicalIndex:
    """The reference: an index grown one text at a time (every row in the tail)."""
    index = LexicalIndex()
    index.add(texts[:1])
    for text in texts[1:]:
        index.add([text])
    return index


def test_the_base_built_at_once_scores_as_the_index_grown_row_by_row(texts) -> None:
    built, grown = LexicalIndex(), _grown(texts)
    built.add(texts)
    assert len(built) == len(grown) == len(texts) and not built._tail_rows
    live = np.ones(len(texts), dtype=bool)
    live[::5] = False
    for query in QUERIES:
        for mask in (np.ones(len(texts), dtype=bool), live, live[:1000]):
            want = grown.scores(query, mask)
            assert want.any()
            assert np.allclose(built.scores(query, mask), want, rtol=1e-5, atol=1e-6)
            assert not built.scores(query, mask)[~mask].any()


def test_a_large_catalogue_builds_its_base_once_and_maps_it(
    texts, tmp_path, monkeypatch, caplog
) -> None:
    """From CACHE_FROM texts the base is saved by the hash of the texts: the next process over
    the same catalogue memory-maps it; rows appended to a mapped base (a PUT) score as an
    index built afresh over all the rows; a damaged copy is built again, with a warning."""
    monkeypatch.setattr(postings, "CACHE_FROM", 1000)
    small = LexicalIndex.cached(texts[:999], cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # below CACHE_FROM: nothing saved
    first = LexicalIndex.cached(texts[:-10], cache_dir=tmp_path)
    [folder] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    second = LexicalIndex.cached(texts[:-10], cache_dir=tmp_path)
    assert isinstance(second._rows, np.memmap) and not second._rows.flags.writeable
    everything = np.ones(len(texts) - 10, dtype=bool)
    for query in QUERIES:
        assert np.array_equal(first.scores(query, everything), second.scores(query, everything))
    assert np.allclose(small.scores("opi", everything[:999]), first.scores("opi", everything[:999]))

    second.add(texts[-10:])  # appended after the mapped base
    fresh = LexicalIndex()
    fresh.add(texts)
    all_rows = np.ones(len(texts), dtype=bool)
    for query in (*QUERIES, texts[-1]):
        assert np.allclose(second.scores(query, all_rows), fresh.scores(query, all_rows))
    assert second.scores(texts[-1], all_rows).argmax() == len(texts) - 1
    # the earlier catalogue state (the mapped rows alone) keeps its scores
    assert np.array_equal(second.scores("opi", everything), first.scores("opi", everything))

    (folder / "rows.npy").unlink()  # (never written over: mapped by the indexes above)
    (folder / "rows.npy").write_bytes(b"not an array")
    with caplog.at_level(logging.WARNING, logger="promptrec.scorers.postings"):
        again = LexicalIndex.cached(texts[:-10], cache_dir=tmp_path)
    assert "building it again" in caplog.text
    assert np.allclose(again.scores("opi", everything), fresh.scores("opi", everything))


def test_a_saved_index_with_rows_appended_is_refused(texts, tmp_path) -> None:
    index = LexicalIndex()
    index.add(texts[:100])
    index.add(texts[100:101])
    with pytest.raises(ValueError, match="built at once"):
        index.save(tmp_path / "index")
