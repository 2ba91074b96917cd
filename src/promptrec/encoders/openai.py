"""An OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM, TEI, llama.cpp, Ollama, OpenAI...)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from promptrec.encoders.base import Encoder, TextKind, normalise
from promptrec.errors import ConfigError

CHARS_PER_TOKEN = 3  # conservative: the server's tokenizer is unknown here


class OpenAIEncoder(Encoder):
    """Encode through a remote embeddings endpoint.

    Text leaves the machine: only configure this when that is acceptable.

    Args:
        model: the model name the server knows.
        base_url: e.g. ``http://localhost:8000/v1``; default ``$PROMPTREC_OPENAI_BASE_URL``,
            then ``$OPENAI_BASE_URL``.
        api_key: default ``$PROMPTREC_OPENAI_API_KEY``, then ``$OPENAI_API_KEY``.
        max_tokens: the model's input limit (token counts are estimated from characters).
        query_prefix / document_prefix: prepended texts for asymmetric models (E5: "query: ").
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 512,
        timeout: float = 60.0,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        import httpx

        base_url = (
            base_url
            or os.environ.get("PROMPTREC_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
        )
        if not base_url:
            raise ConfigError(
                "an OpenAI-compatible encoder needs a base URL: --openai-base-url or "
                "PROMPTREC_OPENAI_BASE_URL (for example http://localhost:8000/v1)"
            )
        key = (
            api_key
            or os.environ.get("PROMPTREC_OPENAI_API_KEY")
            or os.environ.get("OPENAI_API_KEY")
        )
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model = model
        self.max_tokens = max_tokens
        self.prefix = {"query": query_prefix, "document": document_prefix}
        self.name = f"openai:{base_url.rstrip('/')}:{model}"
        self._dim: int | None = None  # the server's: asked for when first needed

    @property
    def dim(self) -> int:  # type: ignore[override]
        """The vector size, learnt from the server (one short request, the first time it is
        needed before any text was encoded: a catalogue's vectors are allocated with it)."""
        if self._dim is None:
            self._dim = int(self._post([self.prefix["document"] + "dimension"]).shape[1])
        return self._dim

    def _post(self, texts: list[str]) -> np.ndarray:
        import httpx

        try:
            resp = self._client.post("/embeddings", json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise ConfigError(f"embeddings endpoint {self._client.base_url}: {exc}") from exc
        if resp.status_code != 200:
            raise ConfigError(
                f"embeddings endpoint {self._client.base_url} answered {resp.status_code}: "
                f"{resp.text[:200]}"
            )
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vectors = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"embeddings endpoint {self._client.base_url} did not answer with embeddings "
                f"({type(exc).__name__}: {exc}); expected the OpenAI format "
                '{"data": [{"index": 0, "embedding": [...]}, ...]}'
            ) from None
        if vectors.ndim != 2 or len(vectors) != len(texts) or not vectors.shape[1]:
            raise ConfigError(
                f"embeddings endpoint {self._client.base_url} answered {vectors.shape} for "
                f"{len(texts)} texts: expected one non-empty vector per text"
            )
        return vectors

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: TextKind = "document",
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        prefix = self.prefix[kind]
        parts = []
        for start in tqdm(
            range(0, len(texts), batch_size), disable=not show_progress, desc="encoding"
        ):
            parts.append(self._post([prefix + t for t in texts[start : start + batch_size]]))
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = normalise(np.concatenate(parts))
        if self._dim is not None and out.shape[1] != self._dim:
            raise ConfigError(
                f"embeddings endpoint {self._client.base_url} answered {out.shape[1]}-d vectors "
                f"after {self._dim}-d ones: one model must give one size"
            )
        self._dim = out.shape[1]
        return out

    def count_tokens(self, text: str) -> int:
        return len(text) // CHARS_PER_TOKEN + 2
