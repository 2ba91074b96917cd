"""Why an item was recommended: the history items that pulled it up, and matched query terms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from promptrec.data.dataset import UserHistory

_WORD = re.compile(r"[\w']+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be by for from has have i in is it its me my of on or that the this to "
    "was were with you your".split()
)


@dataclass(frozen=True)
class HistoryReason:
    """A history item that pulled a recommendation up, with their cosine similarity."""

    item_id: str
    title: str
    similarity: float


@dataclass(frozen=True)
class Explanation:
    """The structured reason for one recommended item."""

    because: list[HistoryReason] = field(default_factory=list)
    query_terms: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        parts = []
        if self.because:
            parts.append(
                "similar to " + ", ".join(f"{r.title} ({r.similarity:.2f})" for r in self.because)
            )
        if self.query_terms:
            parts.append("matches " + ", ".join(repr(t) for t in self.query_terms))
        return "; ".join(parts) if parts else "popular with other users"


def terms(text: str) -> list[str]:
    """Lower-cased words of a text, stopwords removed, first occurrence order."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text.lower()):
        if len(w) > 1 and w not in STOPWORDS:
            seen.setdefault(w, None)
    if not seen and text.strip():  # scripts without spaces (Chinese): characters are terms
        for ch in text.strip():
            if not ch.isspace():
                seen.setdefault(ch, None)
    return list(seen)


def explain_items(
    history: UserHistory,
    items: np.ndarray,
    item_vectors: np.ndarray,
    item_ids: np.ndarray,
    labels: list[str],
    item_texts: list[str] | None = None,
    *,
    top: int = 3,
    min_similarity: float = 0.0,
) -> list[Explanation]:
    """One explanation per recommended item index in ``items``.

    The reasons are the ``top`` history items with the highest cosine similarity to the
    recommended item; query terms are the live query's words found in the item's text.
    """
    hist = np.unique(history.items[-50:]) if len(history) else np.zeros(0, dtype=np.int64)
    sims = None
    if len(hist):  # cosines: a model may scale some vectors (new items: ``new_item_scale``)
        rec, past = _unit(item_vectors[items]), _unit(item_vectors[hist])
        sims = rec @ past.T  # [n_rec, n_hist]
    q_terms = terms(history.query) if history.query else []
    out = []
    for row, item in enumerate(items):
        because: list[HistoryReason] = []
        if sims is not None:
            order = np.argsort(-sims[row])[:top]
            because = [
                HistoryReason(
                    str(item_ids[hist[j]]), labels[hist[j]], round(float(sims[row, j]), 4)
                )
                for j in order
                if sims[row, j] > min_similarity
            ]
        matched: list[str] = []
        if q_terms and item_texts is not None:
            text = item_texts[item].lower()
            item_terms = set(terms(text))
            matched = [t for t in q_terms if t in item_terms or (len(t) == 1 and t in text)]
        out.append(Explanation(because, matched))
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
