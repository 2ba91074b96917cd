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
        self.dim = 0  # known after the first call
        self._dim_known = False

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
        data = sorted(resp.json()["data"], key=lambda d: d["index"])
        return np.asarray([d["embedding"] for d in data], dtype=np.float32)

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
        self.dim = out.shape[1]
        return out

    def count_tokens(self, text: str) -> int:
        return len(text) // CHARS_PER_TOKEN + 2
