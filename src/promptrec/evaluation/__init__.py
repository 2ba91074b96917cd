"""Evaluation under ``shared/EVALUATION.md``: metrics, the evaluator, reports and plots."""

from promptrec.evaluation.evaluator import EvaluationResult, StrategyResult, evaluate
from promptrec.evaluation.metrics import (
    average_popularity,
    coverage,
    mrr_at,
    ndcg_at,
    ranking_metrics,
    recall_at,
)

__all__ = [
    "EvaluationResult",
    "StrategyResult",
    "average_popularity",
    "coverage",
    "evaluate",
    "mrr_at",
    "ndcg_at",
    "ranking_metrics",
    "recall_at",
]
