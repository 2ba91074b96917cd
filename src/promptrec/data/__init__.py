"""Data: catalogue and behaviour log in memory, readers, the split, the store."""

from promptrec.data.dataset import EVENTS_COLUMNS, Dataset, UserHistory, build_histories

__all__ = ["Dataset", "UserHistory", "build_histories", "EVENTS_COLUMNS"]
