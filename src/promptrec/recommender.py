"""The facade: fit on a dataset, recommend for users (with filters, live queries, explanations).

Example::

    from promptrec import Recommender, load_dataset, Filters
    data = load_dataset("../shared/data/amazon-beauty")
    rec = Recommender("mean-of-items").fit(data)
    [r] = rec.recommend(["12"], n=5, query="red nail polish",
                        filters=Filters(price_max=20), explain=True)
    # a history of fresh events, not in the fitted log, is recommended for the same way:
    [r] = rec.recommend([UserHistory("new", np.array([3, 8]))], n=5)
    for item in r.items:
        print(item.item_id, item.score, item.explanation.to_text())
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from promptrec.data.dataset import Dataset, UserHistory, live_query
from promptrec.data.rows import Column
from promptrec.encoders import Encoder
from promptrec.errors import ConfigError
from promptrec.explain import Explanation, explain_items
from promptrec.prompts.items import ItemPrompter
from promptrec.prompts.users import UserPrompt
from promptrec.ranking import rank
from promptrec.retrieval.filters import Filters
from promptrec.retrieval.index import CALIBRATION_USERS, IndexConfig, VectorIndex, cached_index
from promptrec.scorers import (
    SCORERS,
    PromptScorer,
    Scorer,
    TextSpace,
    VectorScorer,
    make_scorer,
)
from promptrec.scorers.base import NotFittedError
from promptrec.scorers.query import QueryAwareScorer, QueryMix

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
    scorer: Scorer  # the fitted scorer (what lists are reported as)
    ranked: Scorer  # whose terms are ranked: the scorer, or it with the live query's match
    index: VectorIndex | None = None  # an approximate index of the scorer's vectors, or None
    labels: Column | None = None  # each item's display label (see Recommender.labels)

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
        index: how a vector scorer's lists are searched (:class:`IndexConfig`: every item
            scored up to 200k items, an approximate HNSW graph above, by default). Evaluation
            always scores every item.
        query_mix: how a live query enters a vector scorer's lists (:class:`QueryMix`): its
            vector at ``query_weight`` (set on the scorer), plus its BM25 match with each item's
            text at ``lexical_weight``.
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
    @property
    def text_space(self) -> TextSpace:
        """The item texts and their vectors (built on demand; a trained model's own)."""
        if self._space is None:
            self._space = TextSpace(self._encoder_spec, self._item_template)
        return self._space

    def _make(self, name: str) -> Scorer:
        if name in ("popularity", "itemknn"):
            return make_scorer(name)
        return make_scorer(name, self.text_space, max_tokens=self._max_tokens)

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
        by_vectors = isinstance(scorer, VectorScorer) and scorer.ranks_by_vectors
        if by_vectors and self.index_config.resolve(data.n_items) != "exact":
            index = cached_index(
                scorer.item_vectors,  # type: ignore[union-attr]
                self.index_config,
                key=scorer.item_vectors_key,  # type: ignore[union-attr]
                progress=progress,
                users=lambda: _sample_users(scorer, data),  # type: ignore[arg-type]
            )
        self._fitted = _Fitted(data, scorer, self._with_query_mix(scorer, data), index)
        return self

    def _with_query_mix(self, scorer: Scorer, data: Dataset) -> Scorer:
        """What is ranked for ``scorer``: a vector scorer with a query weight gets the mix's
        (:attr:`query_mix`), and the live query's lexical match where the mix has one."""
        mix = self.query_mix
        if not isinstance(scorer, VectorScorer) or not hasattr(scorer, "query_weight"):
            return scorer
        if mix.lexical_weight <= 0:
            scorer.query_weight = mix.vector_only_weight  # type: ignore[attr-defined]
            return scorer
        learned = getattr(scorer, "learned_queries", False)
        weight = mix.learned_query_weight if learned else mix.query_weight
        aware = QueryAwareScorer(scorer, query_weight=weight, lexical_weight=mix.lexical_weight)
        return aware.fit(data)

    def edited(self, data: Dataset, added: np.ndarray) -> Recommender:
        """A copy serving ``data``: this recommender's catalogue edited by
        :meth:`Dataset.edited` (rows appended at ``added``, some retired), while this one keeps
        serving its own. Only the appended items are encoded, indexed (the index is shared
        with this recommender, which never sees keys past its own catalogue) and their words
        added to the lexical index; nothing is relearned.
        """
        st = self._state()
        ranked = st.ranked.edited(data, added)
        scorer = ranked.inner if isinstance(ranked, QueryAwareScorer) else ranked
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
        clone._fitted = _Fitted(data, scorer, ranked, index)
        if clone._shared_labels() is None:  # the text space's, else extended here
            clone._fitted.labels = self.labels.extended(ItemPrompter.labels(data.rows(added)))
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

    @property
    def index(self) -> VectorIndex | None:
        """The approximate index lists are searched through (None: every item is scored)."""
        return self._state().index

    def _state(self) -> _Fitted:
        if self._fitted is None:
            raise NotFittedError("Recommender is not fitted: call fit(data) first")
        return self._fitted

    @property
    def user_ids(self) -> list[str]:
        """The users of the fitted log."""
        return list(self._state().histories)

    def history(self, user_id: str) -> UserHistory:
        """The user's history in the fitted log (empty for an unknown user)."""
        st = self._state()
        return st.histories.get(str(user_id), UserHistory(str(user_id), np.zeros(0, np.int64)))

    # ------------------------------------------------------------------ recommending
    def recommend(
        self,
        users: Sequence[str | UserHistory],
        n: int = 10,
        *,
        query: str | None = None,
        filters: Filters | None = None,
        exclude_seen: bool = True,
        explain: bool = False,
        progress: bool = False,
    ) -> list[Recommendation]:
        """Top-``n`` lists, one per user, in order.

        Args:
            users: user ids (their history in the fitted log; an unknown user gets the
                cold-start list) or :class:`UserHistory` objects (fresh events not in the
                fitted log, each with its own live query if it has one).
            n: items per list.
            query: a live query for every user (None or blank: each user's own, if any).
            filters: which items a list may hold.
            exclude_seen: leave out the items of each user's history.
            explain: explain each item (and give a prompt strategy's prompt).
            progress: a progress bar (for many users).
        """
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        st = self._state()
        histories = [h if isinstance(h, UserHistory) else self.history(h) for h in users]
        if live_query(query) is not None:
            histories = [h.with_query(query) for h in histories]
        allowed = self._eligible(filters)
        step = max(256, st.scorer.batch_size)  # prompt strategies encode 2,048 at once
        out: list[Recommendation] = []
        with tqdm(total=len(histories), disable=not progress, desc="users", unit="user") as bar:
            for start in range(0, len(histories), step):
                batch = histories[start : start + step]
                exclude = [h.items for h in batch] if exclude_seen else None
                idx, best = rank(
                    st.ranked.terms(batch), n, exclude=exclude, allowed=allowed, index=st.index
                )
                prompts: list[UserPrompt | None] = [None] * len(batch)
                if explain and isinstance(st.scorer, PromptScorer):
                    prompts = list(st.scorer.prompts(batch))
                out += [
                    self._assemble(h, idx[row], best[row], prompts[row], explain)
                    for row, h in enumerate(batch)
                ]
                bar.update(len(batch))
        return out

    def _eligible(self, filters: Filters | None) -> np.ndarray | None:
        """``[n_items]`` bool of the items a list may hold (the filters', among the catalogue's
        live rows), or None for all."""
        st = self._state()
        live = st.data.live_mask()
        chosen = filters.mask(st.data) if filters is not None else None
        if chosen is None or live is None:
            return live if chosen is None else chosen
        return chosen & live

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
        labels = self.labels
        explanations: list[Explanation | None] = [None] * len(idx)
        if explain and len(idx):
            space = self.text_space.fit(st.data)
            explanations = list(
                explain_items(history, idx, space.vectors, st.data.item_ids, labels, space.texts)
            )
        items = [
            RecommendedItem(str(st.data.item_ids[i]), float(s), labels[i], e)
            for i, s, e in zip(idx, scores, explanations, strict=True)
        ]
        return Recommendation(history.user_id, items, st.scorer.name, prompt, len(history))

    @property
    def labels(self) -> Column:
        """Each item's display label: the text space's (the same labels its prompts use),
        else made here once."""
        st = self._state()
        if st.labels is None:
            st.labels = self._shared_labels() or Column(ItemPrompter.labels(st.data.items))
        return st.labels

    def _shared_labels(self) -> Column | None:
        st = self._state()
        space = getattr(st.scorer, "space", None)
        if isinstance(space, TextSpace) and space.fitted_on(st.data):
            return space.catalog.labels
        return None

    def describe(self) -> dict[str, Any]:
        st = self._state()
        return {
            "strategy": st.scorer.name,
            "config": st.scorer.config(),
            "selection": self.selection,
        }
