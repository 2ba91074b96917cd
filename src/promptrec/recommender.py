"""The facade: fit on a dataset, recommend for users (with filters, live queries, explanations).

Example::

    from promptrec import Recommender, load_dataset, Filters
    data = load_dataset("../shared/data/amazon-beauty")
    rec = Recommender("mean-of-items").fit(data)
    [r] = rec.recommend(["12"], n=5, query="red nail polish",
                        filters=Filters(price_max=20), explain=True)
    for item in r.items:
        print(item.item_id, item.score, item.explanation.to_text())
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.rows import Column
from promptrec.encoders import Encoder
from promptrec.errors import ConfigError
from promptrec.explain import Explanation, explain_items
from promptrec.prompts.items import ItemPrompter
from promptrec.prompts.users import UserPrompt
from promptrec.retrieval.filters import Filters
from promptrec.retrieval.index import (
    CALIBRATION_USERS,
    IndexConfig,
    VectorIndex,
    cached_index,
)
from promptrec.retrieval.topk import top_k
from promptrec.scorers import (
    SCORERS,
    PromptScorer,
    Scorer,
    TextSpace,
    VectorScorer,
    make_scorer,
)
from promptrec.scorers.base import NotFittedError
from promptrec.scorers.lexical import BM25Scorer
from promptrec.scorers.query import QueryMix

log = logging.getLogger("promptrec")

# candidates for strategy="auto": cheap to score on a validation sample, no prompt encoding
AUTO_CANDIDATES = ("itemknn", "mean-of-items", "multi-interest", "popularity")
AUTO_VALIDATION_USERS = 2000


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    title: str
    explanation: Explanation | None = None


@dataclass(frozen=True)
class Recommendation:
    """The list for one user, best first."""

    user_id: str
    items: list[RecommendedItem]
    strategy: str
    prompt: UserPrompt | None = None
    history_length: int = 0

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]

    @property
    def scores(self) -> list[float]:
        return [i.score for i in self.items]


@dataclass
class _Fitted:
    data: Dataset
    scorer: Scorer
    labels: Column | None = None  # each item's display label (see Recommender._labels)
    index: VectorIndex | None = None  # for a vector scorer: what lists are ranked through
    #: BM25 over the item texts, for lists with a live query (see QueryMix)
    lexical: BM25Scorer | None = None

    @cached_property
    def histories(self) -> dict[str, UserHistory]:
        """Every user's history in the fitted log (built when first asked for)."""
        return {h.user_id: h for h in self.data.histories()}


def _sample_users(
    scorer: VectorScorer, data: Dataset, n: int = CALIBRATION_USERS
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The vectors and histories of ``n`` users of ``data`` (seeded; those with a vector), on
    which an approximate index calibrates its search."""
    users = data.user_ids
    chosen = np.random.default_rng(0).choice(len(users), size=min(n, len(users)), replace=False)
    histories = data.histories([users[i] for i in np.sort(chosen)])
    vectors = scorer.user_vectors(histories)
    warm = np.flatnonzero(vectors.any(axis=1))
    return vectors[warm], [histories[i].items for i in warm]


def _with_sparse_term(
    found: np.ndarray,
    users: np.ndarray,
    extra: sp.csr_matrix,
    item_vectors: np.ndarray,
    exclude: list[np.ndarray] | None,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``found.shape[1]`` items per user by inner product plus ``extra`` (sparse,
    non-negative), given ``found``, the best by inner product alone: the candidates are
    ``found`` and the items ``extra`` names; any other item scores its inner product only,
    below every one of ``found``'s, so the result is the exact top (as exact as ``found``)."""
    n = found.shape[1]
    idx = np.full(found.shape, -1, dtype=np.int64)
    best = np.full(found.shape, -np.inf, dtype=np.float32)
    for row in range(len(found)):
        named = extra.indices[extra.indptr[row] : extra.indptr[row + 1]]
        cand = np.union1d(found[row][found[row] >= 0], named)
        if allowed is not None:
            cand = cand[allowed[cand]]
        if exclude is not None and len(exclude[row]):
            cand = cand[~np.isin(cand, exclude[row])]
        scores = item_vectors[cand] @ users[row] + extra[row, cand].toarray().ravel()
        order = np.argsort(-scores, kind="stable")[:n]
        idx[row, : len(order)] = cand[order]
        best[row, : len(order)] = scores[order]
    return idx, best


class Recommender:
    """Recommend items for users from their behaviour and an optional live query.

    Args:
        strategy: a scorer name (``mean-of-items``, ``sectioned``, ``recent``, ``profile``,
            ``query``, ``itemknn``, ``popularity``) or ``"auto"``: pick the best of
            ``AUTO_CANDIDATES`` by NDCG@10 on the data's own validation split.
        encoder: the text encoder (an :class:`Encoder` or a :func:`load_encoder` spec).
        item_template: item template (domain name or .j2 path; None picks by columns).
        max_tokens: user prompt token budget (None: the encoder's limit).
        scorer: a ready scorer (e.g. a trained model); overrides ``strategy``.
        index: how a vector scorer's lists are searched (:class:`IndexConfig`: exact up to
            200k items, an approximate HNSW graph above, by default). Evaluation always scores
            every item exactly.
        query_mix: how a live query enters a vector scorer's lists (:class:`QueryMix`): its
            vector at ``query_weight`` (set on the scorer), plus its BM25 match with each item's
            text at ``lexical_weight``, for catalogues of up to ``lexical_up_to`` items.
    """

    def __init__(
        self,
        strategy: str = "auto",
        *,
        encoder: Encoder | str | None = None,
        item_template: str | None = None,
        max_tokens: int | None = None,
        scorer: Scorer | None = None,
        index: IndexConfig | None = None,
        query_mix: QueryMix | None = None,
    ) -> None:
        if scorer is None and strategy != "auto" and strategy not in SCORERS:
            raise ConfigError(f"unknown strategy '{strategy}': choose from auto, {list(SCORERS)}")
        self.strategy = scorer.name if scorer is not None else strategy
        self._encoder_spec = encoder
        self._item_template = item_template
        self._max_tokens = max_tokens
        self._scorer = scorer
        # a trained scorer brings its own text space (encoder + item template): share it
        self._space: TextSpace | None = getattr(scorer, "space", None)
        self._fitted: _Fitted | None = None
        self.selection: dict[str, float] | None = None
        self.index_config = index or IndexConfig()
        self.query_mix = query_mix or QueryMix()

    # ------------------------------------------------------------------ fitting
    def _text_space(self) -> TextSpace:
        if self._space is None:
            self._space = TextSpace(self._encoder_spec, self._item_template)
        return self._space

    def _make(self, name: str) -> Scorer:
        if name in ("popularity", "itemknn"):
            return make_scorer(name)
        return make_scorer(name, self._text_space(), max_tokens=self._max_tokens)

    def fit(self, data: Dataset, *, progress: bool = False) -> Recommender:
        """Fit on the whole log (choosing the strategy on its validation split when auto)."""
        if self._scorer is not None:
            scorer = self._scorer if self._scorer.data is data else self._scorer.fit(data)
        else:
            name = self.strategy
            if name == "auto":
                name = self._select(data, progress=progress)
            scorer = self._make(name).fit(data)
        self.strategy = scorer.name
        index = None
        if isinstance(scorer, VectorScorer) and scorer.ranks_by_vectors:
            index = cached_index(
                scorer.item_vectors,
                self.index_config,
                progress=progress,
                users=lambda: _sample_users(scorer, data),
            )
        self._fitted = _Fitted(data, scorer, index=index, lexical=self._lexical(scorer, data))
        return self

    def _lexical(self, scorer: Scorer, data: Dataset) -> BM25Scorer | None:
        """Set the scorer's query weight by :attr:`query_mix`; the BM25 index of its item
        texts when the mix has a lexical term for a catalogue of this size."""
        mix = self.query_mix
        if not isinstance(scorer, VectorScorer) or not hasattr(scorer, "query_weight"):
            return None
        if mix.lexical_weight <= 0 or data.n_items > mix.lexical_up_to:
            scorer.query_weight = mix.vector_only_weight  # type: ignore[attr-defined]
            return None
        scorer.query_weight = mix.query_weight  # type: ignore[attr-defined]
        return BM25Scorer(scorer.space).fit(data)  # type: ignore[attr-defined]

    def edited(self, data: Dataset, added: np.ndarray) -> Recommender:
        """A copy serving ``data``: this recommender's catalogue edited by
        :meth:`Dataset.edited` (rows appended at ``added``, some retired), while this one keeps
        serving its own. Only the appended items are encoded and added to the index (shared
        with this recommender, which never sees keys past its own catalogue); nothing is
        relearned.
        """
        st = self._state()
        scorer = st.scorer.edited(data, added)
        index = st.index
        if index is not None:
            assert isinstance(scorer, VectorScorer)
            if index.size == st.data.n_items:
                index.add(scorer.item_vectors[added])
            else:  # keys were added for a change never served: start a clean index
                index = cached_index(scorer.item_vectors, self.index_config)
        clone = copy.copy(self)
        clone._scorer = scorer
        clone._space = getattr(scorer, "space", None) or self._space
        clone._fitted = _Fitted(data, scorer, None, index, st.lexical)
        if clone._shared_labels() is None:  # the text space's, else extended here
            clone._fitted.labels = self._labels().extended(ItemPrompter.labels(data.rows(added)))
        if st.lexical is not None:  # the new rows' words, at the cost of those rows
            clone._fitted.lexical = st.lexical.edited(data, added, space=scorer.space)  # type: ignore[attr-defined]
        return clone

    def _select(self, data: Dataset, *, progress: bool) -> str:
        from promptrec.data.split import leave_last_out
        from promptrec.evaluation.evaluator import evaluate_scorer

        split = leave_last_out(data)["validation"].sample(AUTO_VALIDATION_USERS)
        if not split.histories:
            log.warning("no user has 3 interactions: cannot validate; using mean-of-items")
            return "mean-of-items"
        scores = {}
        for name in AUTO_CANDIDATES:
            res = evaluate_scorer(self._make(name), split, progress=progress)
            scores[name] = res.metrics["NDCG@10"]
        self.selection = scores
        best = max(scores, key=scores.__getitem__)
        log.info("strategy auto: validation NDCG@10 %s -> %s", scores, best)
        return best

    @property
    def data(self) -> Dataset:
        return self._state().data

    @property
    def scorer(self) -> Scorer:
        return self._state().scorer

    def _state(self) -> _Fitted:
        if self._fitted is None:
            raise NotFittedError("Recommender is not fitted: call fit(data) first")
        return self._fitted

    def history(self, user_id: str) -> UserHistory:
        """The user's history in the fitted log (empty for an unknown user)."""
        st = self._state()
        return st.histories.get(str(user_id), UserHistory(str(user_id), np.zeros(0, np.int64)))

    # ------------------------------------------------------------------ recommending
    def recommend(
        self,
        user_ids: Sequence[str],
        n: int = 10,
        *,
        query: str | None = None,
        filters: Filters | None = None,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> list[Recommendation]:
        """Top-``n`` lists for ``user_ids`` (unknown users get cold-start lists)."""
        histories = [self.history(u).with_query(query) for u in user_ids]
        return self.recommend_histories(
            histories, n, filters=filters, exclude_seen=exclude_seen, explain=explain
        )

    def recommend_histories(
        self,
        histories: Sequence[UserHistory],
        n: int = 10,
        *,
        filters: Filters | None = None,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> list[Recommendation]:
        """Top-``n`` lists for explicit histories (e.g. fresh events not in the fitted log)."""
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        st = self._state()
        allowed = self._eligible(filters)
        exclude = [h.items for h in histories] if exclude_seen else None
        idx, best = self._rank(histories, n, exclude, allowed)
        prompts: list[UserPrompt | None] = [None] * len(histories)
        if isinstance(st.scorer, PromptScorer):
            prompts = list(st.scorer.prompts(histories))
        return [
            self._assemble(h, idx[row], best[row], prompts[row], explain)
            for row, h in enumerate(histories)
        ]

    def recommend_all(
        self,
        n: int = 20,
        *,
        queries: Mapping[str, str] | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> Iterator[Recommendation]:
        """Lists for every user in the fitted log, streamed in batches (seen items excluded);
        a user in ``queries`` gets the list for that live query and their history."""
        st = self._state()
        histories = list(st.histories.values())
        if queries:
            histories = [
                h.with_query(queries[h.user_id]) if queries.get(h.user_id) else h for h in histories
            ]
        # the scorer's own batch size where it has one (prompt strategies encode 2,048 at once)
        step = max(batch_size, st.scorer.batch_size)
        with tqdm(total=len(histories), disable=not progress, desc="users", unit="user") as bar:
            for start in range(0, len(histories), step):
                batch = histories[start : start + step]
                idx, best = self._rank(batch, n, [h.items for h in batch], self._eligible(None))
                for row, h in enumerate(batch):
                    yield self._assemble(h, idx[row], best[row], None, False)
                bar.update(len(batch))

    def _eligible(self, filters: Filters | None) -> np.ndarray | None:
        """``[n_items]`` bool of the items a list may hold (the filters', among the catalogue's
        live rows), or None for all."""
        st = self._state()
        live = st.data.live_mask()
        chosen = filters.mask(st.data) if filters is not None else None
        if chosen is None or live is None:
            return live if chosen is None else chosen
        return chosen & live

    def _rank(
        self,
        histories: Sequence[UserHistory],
        n: int,
        exclude: list[np.ndarray] | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best item indices and scores per history: through the index for a vector
        scorer (cold users get the most popular items), else from every item's score."""
        st = self._state()
        if st.index is None:
            return top_k(st.scorer.score(histories), n, exclude=exclude, allowed=allowed)
        scorer = st.scorer
        assert isinstance(scorer, VectorScorer)
        if allowed is None and st.index.size != st.data.n_items:
            # the index is shared with later catalogues: keys past this one are not its items
            allowed = np.ones(st.data.n_items, dtype=bool)
        users = scorer.user_vectors(histories)
        warm = users.any(axis=1)
        idx = np.full((len(histories), n), -1, dtype=np.int64)
        best = np.full((len(histories), n), -np.inf, dtype=np.float32)
        lexical = st.lexical
        queried = np.array([bool(h.query) for h in histories]) & (lexical is not None)
        if queried.any():  # every item scored (a catalogue of at most lexical_up_to items)
            rows = np.flatnonzero(queried)
            scores = users[rows] @ scorer.item_vectors.T
            matches = lexical.scaled_scores([histories[r].query for r in rows])  # type: ignore[union-attr]
            scores += self.query_mix.lexical_weight * matches
            extra = scorer.sparse_scores([histories[r] for r in rows])
            if extra is not None:
                scores += extra.toarray()
            idx[rows], best[rows] = top_k(
                scores,
                n,
                exclude=None if exclude is None else [exclude[r] for r in rows],
                allowed=allowed,
            )
        cold = ~warm & ~queried
        warm &= ~queried
        if warm.any():
            rows = np.flatnonzero(warm)
            found, found_scores = st.index.search(
                users[rows],
                n,
                exclude=None if exclude is None else [exclude[r] for r in rows],
                allowed=allowed,
                exact=scorer.item_vectors,
            )
            extra = scorer.sparse_scores([histories[r] for r in rows])
            if extra is not None:
                found, found_scores = _with_sparse_term(
                    found,
                    users[rows],
                    extra,
                    scorer.item_vectors,
                    None if exclude is None else [exclude[r] for r in rows],
                    allowed,
                )
            idx[rows], best[rows] = found, found_scores
        if cold.any():
            rows = np.flatnonzero(cold)
            pop = scorer.popularity / max(float(scorer.popularity.max()), 1.0)
            found, found_scores = top_k(
                np.broadcast_to(pop, (len(rows), len(pop))).copy(),
                n,
                exclude=None if exclude is None else [exclude[r] for r in rows],
                allowed=allowed,
            )
            idx[rows], best[rows] = found, found_scores
        return idx, best

    def _assemble(
        self,
        history: UserHistory,
        idx: np.ndarray,
        scores: np.ndarray,
        prompt: UserPrompt | None,
        explain: bool,
    ) -> Recommendation:
        st = self._state()
        keep = idx >= 0
        idx, scores = idx[keep], scores[keep]
        labels = self._labels()
        explanations: list[Explanation | None] = [None] * len(idx)
        if explain and len(idx):
            space = self._text_space().fit(st.data)
            explanations = list(
                explain_items(history, idx, space.vectors, st.data.item_ids, labels, space.texts)
            )
        items = [
            RecommendedItem(str(st.data.item_ids[i]), float(s), labels[i], e)
            for i, s, e in zip(idx, scores, explanations, strict=True)
        ]
        return Recommendation(history.user_id, items, st.scorer.name, prompt, len(history))

    def _labels(self) -> Column:
        """Each item's display label: the text space's (the same labels its prompts use),
        else made here once."""
        st = self._state()
        if st.labels is None:
            st.labels = self._shared_labels() or Column(ItemPrompter.labels(st.data.items))
        return st.labels

    def _shared_labels(self) -> Column | None:
        st = self._state()
        space = getattr(st.scorer, "space", None)
        if isinstance(space, TextSpace) and getattr(space, "_items", None) is st.data.items:
            return space.catalog.labels
        return None

    def describe(self) -> dict[str, Any]:
        st = self._state()
        return {
            "strategy": st.scorer.name,
            "config": st.scorer.config(),
            "selection": self.selection,
        }
