"""``shared/EVALUATION.md`` end to end: leave-one-out split, full ranking, metrics per strategy.

For each split the scorer is fitted on that split's allowed log only (``Split.fit``: no target
of this split or a later one), then every evaluated user's history (everything strictly before
the target) is scored against the whole catalogue. Items in the user's history are excluded from
the ranking (the default of a product recommender), and the report says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from promptrec.data.dataset import Dataset
from promptrec.data.split import Split, SplitName, leave_last_out
from promptrec.encoders import Encoder
from promptrec.evaluation.metrics import average_popularity, coverage, ndcg_at, ranking_metrics
from promptrec.ranking import rank
from promptrec.retrieval.filters import Filters
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers import SCORERS, Scorer, TextSpace, make_scorer
from promptrec.scorers.popularity import item_counts
from promptrec.scorers.terms import Terms

log = logging.getLogger("promptrec")

HISTORY_BUCKETS = ((3, 5), (6, 10), (11, 20), (21, None))
DEFAULT_STRATEGIES = SCORERS


def bucket_label(lo: int, hi: int | None) -> str:
    return f">{lo - 1}" if hi is None else f"{lo}-{hi}"


@dataclass
class StrategyResult:
    """One strategy on one split: metrics, per-user ranks, time."""

    name: str
    metrics: dict[str, float]
    ranks: np.ndarray
    user_sizes: np.ndarray  # interactions per evaluated user (whole log)
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    top10: np.ndarray | None = None  # per evaluated user, the ten items recommended

    def by_history(self) -> dict[str, dict[str, float]]:
        out = {}
        for lo, hi in HISTORY_BUCKETS:
            sel = (self.user_sizes >= lo) & (
                self.user_sizes <= (hi if hi is not None else np.iinfo(np.int64).max)
            )
            out[bucket_label(lo, hi)] = {
                "users": int(sel.sum()),
                "NDCG@10": ndcg_at(self.ranks[sel], 10),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: round(v, 6) for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 2),
            "by_history": self.by_history(),
            "config": self.config,
        }


@dataclass
class EvaluationResult:
    """All strategies on all evaluated splits of one dataset."""

    dataset: str
    n_items: int
    n_users: dict[str, int]
    splits: dict[str, dict[str, StrategyResult]]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n_items": self.n_items,
            "protocol": {
                "split": "per-user chronological leave-one-out (shared/EVALUATION.md)",
                "ranking": "full catalogue",
                "history_items_excluded": self.settings.get("exclude_seen", True),
            },
            "settings": self.settings,
            "splits": {
                split: {
                    "users": self.n_users[split],
                    "results": {name: r.to_dict() for name, r in results.items()},
                }
                for split, results in self.splits.items()
            },
        }

    def best(self, split: str = "validation", metric: str = "NDCG@10") -> str:
        results = self.splits[split]
        return max(results, key=lambda name: results[name].metrics[metric])


def evaluate_scorer(
    scorer: Scorer,
    split: Split,
    *,
    ks: Sequence[int] = (10, 20),
    exclude_seen: bool = True,
    progress: bool = True,
    sizes: np.ndarray | None = None,
    filters: Filters | None = None,
) -> StrategyResult:
    """Fit ``scorer`` on ``split.fit`` and rank every evaluated user's target against the
    whole catalogue (:meth:`Terms.scores <promptrec.scorers.terms.Terms.scores>`); each user's
    ten best items are ranked by :func:`promptrec.ranking.rank`, the function every list a
    user is served comes from. With ``filters``, only the items they keep are ranked (a target
    outside them is never found)."""
    t0 = time.perf_counter()
    scorer.fit(split.fit)
    allowed = None if filters is None else filters.mask(split.fit)
    n = len(split.histories)
    ranks = np.empty(n, dtype=np.int64)
    tops = []
    for start, terms in scorer.terms_batches(
        split.histories, progress=progress, desc=f"{split.name}: {scorer.name}"
    ):
        hist = split.histories[start : start + len(terms)]
        exclude = [h.items for h in hist] if exclude_seen else None
        scores = terms.scores()
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        ranks[start : start + len(terms)] = target_ranks(
            scores, split.targets[start : start + len(terms)], exclude
        )
        idx, _ = rank(Terms.of_scores(scores), 10, exclude=exclude, allowed=allowed)
        tops.append(idx)
    metrics = ranking_metrics(ranks, ks)
    top10 = np.concatenate(tops) if tops else np.zeros((0, 10), dtype=np.int64)
    metrics["Coverage@10"] = coverage(top10, split.fit.n_items)
    metrics["AvgPop@10"] = average_popularity(top10, item_counts(split.fit))
    if sizes is None:
        extra = 1 if split.name == "test" else 2
        sizes = np.array([len(h) + extra for h in split.histories])
    return StrategyResult(
        scorer.name, metrics, ranks, sizes, time.perf_counter() - t0, scorer.config(), top10
    )


def evaluate(
    data: Dataset,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    *,
    splits: Sequence[SplitName] = ("validation", "test"),
    ks: Sequence[int] = (10, 20),
    encoder: Encoder | str | None = None,
    item_template: str | None = None,
    max_tokens: int | None = None,
    validation_users: int | None = None,
    exclude_seen: bool = True,
    seed: int = 0,
    progress: bool = True,
    models: dict[str, Scorer] | None = None,
) -> EvaluationResult:
    """Evaluate built-in strategies and baselines under ``shared/EVALUATION.md``.

    Args:
        data: the dataset.
        strategies: scorer names (see :data:`promptrec.scorers.SCORERS`).
        splits: which splits to score (validation to choose, test to report).
        ks: cut-offs for Recall/NDCG/MRR.
        encoder: encoder or spec shared by the text strategies.
        item_template: item template for the text strategies (None: by catalogue columns).
        max_tokens: user prompt budget (None: the encoder's limit).
        validation_users: score at most this many validation users (seeded sample), to make
            model choice cheaper on big logs; the test split always scores every user.
        exclude_seen: exclude history items from the ranking.
        seed: the sampling seed.
        progress: show progress bars.
        models: trained scorers by name, scored on the test split only (they were chosen and
            stopped on validation targets, so a validation number would flatter them).
    """
    for name in strategies:
        if name not in SCORERS:
            make_scorer(name)  # raises the ConfigError listing valid names
    all_splits = leave_last_out(data)
    space = None
    if any(name not in ("popularity", "itemknn") for name in strategies):
        space = TextSpace(encoder, item_template).fit(data, progress=progress)
    results: dict[str, dict[str, StrategyResult]] = {}
    n_users: dict[str, int] = {}
    for split_name in splits:
        split = all_splits[split_name]
        if split_name == "validation":
            split = split.sample(validation_users, seed)
        n_users[split_name] = len(split.histories)
        results[split_name] = {}
        for name in strategies:
            scorer = make_scorer(name, space, max_tokens=max_tokens)
            res = evaluate_scorer(
                scorer, split, ks=ks, exclude_seen=exclude_seen, progress=progress
            )
            log.info(
                "%s %s NDCG@10=%.4f (%.1fs)", split_name, name, res.metrics["NDCG@10"], res.seconds
            )
            results[split_name][name] = res
        if split_name == "test":
            for name, model in (models or {}).items():
                res = evaluate_scorer(
                    model, split, ks=ks, exclude_seen=exclude_seen, progress=progress
                )
                res.name = name
                log.info("test %s NDCG@10=%.4f", name, res.metrics["NDCG@10"])
                results[split_name][name] = res
    settings = {
        "strategies": list(strategies),
        "encoder": space.encoder.name if space else None,
        "item_template": space.template_name if space else None,
        "max_tokens": max_tokens,
        "validation_users": validation_users,
        "exclude_seen": exclude_seen,
        "seed": seed,
        "models": sorted(models or {}),
    }
    return EvaluationResult(data.name, data.n_items, n_users, results, settings)
