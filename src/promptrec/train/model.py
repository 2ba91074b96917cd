"""The fast-mode two-tower model: frozen text vectors in, small trainable parts on top.

* **Item tower**: a projection adapter of the item's cached text vector (``Linear`` +
  ``LayerNorm``), plus, for items with enough training interactions, a learned id embedding
  (hybrid). An item never seen in training gets its vector from text alone.
* **User tower**: a causal Transformer over the sequence of history item vectors (SASRec-style,
  Kang & McAuley, ICDM 2018); the state after the newest item is the user vector. A live query
  is encoded by the frozen language model, projected (:meth:`TwoTowerModel.query_vectors`: by
  the query tower of a model trained on queries, else by the item tower's adapter) and added.
* **Query tower** (``query_tower``, a model trained on queries): its own projection of a
  query's text vector and a learned scale, trained with queries added to the user vectors
  (:class:`~promptrec.train.queries.QueryBank`), so the model learns how much a query counts
  against a history.

Scores are cosine similarities (or plain inner products with ``cosine=False``) of user and
item vectors; training divides them by a temperature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class ItemTower(nn.Module):
    """Item vectors from text vectors (and optional id embeddings).

    Args:
        text_dim: size of the frozen text vectors.
        dim: model size.
        n_items: catalogue size (id embeddings, when ``use_ids``).
        dropout: dropout on the projected text.
        use_ids: add a learned id embedding (hybrid).
        id_dropout: in training, the share of items whose id embedding is left out at each
            step when they are scored as candidates (``drop_ids``): each such item's text
            vector must then score it alone, as a new item's does. The history the user tower
            reads keeps every id: a new item is never in a history.
    """

    def __init__(
        self,
        text_dim: int,
        dim: int,
        n_items: int,
        dropout: float,
        use_ids: bool,
        id_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.id_dropout = id_dropout
        self.proj = nn.Linear(text_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.use_ids = use_ids
        self.ids = nn.Embedding(n_items, dim) if use_ids else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.02)

    def forward(
        self,
        text: torch.Tensor,
        id_mask: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        drop_ids: bool = False,
    ) -> torch.Tensor:
        """``text`` ``[n, text_dim]`` -> ``[n, dim]``: all items in index order, or the items
        ``items`` ``[n]`` (their indices) alone.

        ``id_mask`` ``[n]`` (bool): items whose id embedding is used. ``drop_ids``: in
        training, leave out a fresh ``id_dropout`` share of them (the vectors as candidates).
        """
        out = self.norm(self.proj(text))
        if self.ids is not None:
            ids = self.ids.weight[: text.shape[0]] if items is None else self.ids(items)
            if id_mask is not None:
                ids = ids * id_mask[:, None].to(ids.dtype)
            if drop_ids and self.training and self.id_dropout > 0:
                kept = torch.rand(ids.shape[0], device=ids.device) >= self.id_dropout
                ids = ids * kept[:, None].to(ids.dtype)
            out = out + ids
        return self.dropout(out)

    def project_query(self, text: torch.Tensor) -> torch.Tensor:
        """A query's text vector in item space (no id part)."""
        return self.norm(self.proj(text))


class QueryTower(nn.Module):
    """A query's text vector in user space: its own projection (``Linear`` + ``LayerNorm``,
    starting as a copy of the item tower's) and a learned scale of the result as scored.

    Args:
        items: the item tower whose projection it starts from.
    """

    def __init__(self, items: ItemTower) -> None:
        super().__init__()
        self.proj = nn.Linear(items.proj.in_features, items.proj.out_features)
        self.norm = nn.LayerNorm(items.proj.out_features)
        self.proj.load_state_dict(items.proj.state_dict())
        self.scale = nn.Parameter(torch.ones(()))

    def forward(
        self, text: torch.Tensor, scoring: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        return self.scale * scoring(self.norm(self.proj(text)))


class SequenceUserTower(nn.Module):
    """A causal Transformer over history item vectors (right-padded sequences)."""

    def __init__(self, dim: int, max_len: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.position = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim * 2, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        )

    def forward(self, seq: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``seq`` ``[B, L, dim]`` item vectors, ``padding`` ``[B, L]`` (True = padding).

        Returns the state after every position, ``[B, L, dim]``.
        """
        length = seq.shape[1]
        pos = self.position(torch.arange(length, device=seq.device))
        x = self.dropout(seq + pos[None])
        x = self.encoder(x, mask=self.causal[:length, :length], src_key_padding_mask=padding)
        return self.norm(x)


class TwoTowerModel(nn.Module):
    """Item tower + sequence user tower (see the module docstring)."""

    def __init__(
        self,
        text_dim: int,
        n_items: int,
        *,
        dim: int = 64,
        max_len: int = 50,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.3,
        use_ids: bool = True,
        cosine: bool = True,
        id_dropout: float = 0.0,
        query_tower: bool = False,
    ) -> None:
        super().__init__()
        self.cosine = cosine
        self.hparams = {
            "text_dim": text_dim,
            "n_items": n_items,
            "dim": dim,
            "max_len": max_len,
            "layers": layers,
            "heads": heads,
            "dropout": dropout,
            "use_ids": use_ids,
            "cosine": cosine,
            "id_dropout": id_dropout,
            "query_tower": query_tower,
        }
        self.items = ItemTower(text_dim, dim, n_items, dropout, use_ids, id_dropout)
        self.users = SequenceUserTower(dim, max_len, layers, heads, dropout)
        self.queries: QueryTower | None = None
        if query_tower:
            self.queries = QueryTower(self.items)

    def query_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """Live queries' text vectors ``[n, text_dim]`` -> what is added to the scored user
        vectors, ``[n, dim]``: through the query tower when the model has one, else the item
        tower's projection, as scored (unit length under cosine)."""
        if self.queries is not None:
            return self.queries(text, self.scoring)
        return self.scoring(self.items.project_query(text))

    def item_vectors(
        self,
        text: torch.Tensor,
        id_mask: torch.Tensor | None,
        items: torch.Tensor | None = None,
        drop_ids: bool = False,
    ) -> torch.Tensor:
        """Item vectors as the user tower reads them (inputs of the sequence): of every item,
        or of the items ``items`` (indices; ``text`` and ``id_mask`` are then theirs).
        ``drop_ids``: as candidates in training (see :class:`ItemTower`)."""
        return self.items(text, id_mask, items, drop_ids)

    def scoring(self, vectors: torch.Tensor) -> torch.Tensor:
        """User or item vectors as they are scored: unit length under cosine similarity."""
        return torch.nn.functional.normalize(vectors, dim=-1) if self.cosine else vectors

    def sequence_states(self, item_vecs: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """``seqs`` ``[B, L]`` item indices, -1 = padding -> states ``[B, L, dim]``."""
        padding = seqs < 0
        x = item_vecs[seqs.clamp_min(0)] * (~padding)[..., None].to(item_vecs.dtype)
        return self.users(x, padding)

    def user_vectors(self, item_vecs: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """The state after each sequence's last real item, ``[B, dim]`` (zeros when empty)."""
        states = self.sequence_states(item_vecs, seqs)
        lengths = (seqs >= 0).sum(1)
        last = (lengths - 1).clamp_min(0)
        out = states[torch.arange(len(seqs)), last]
        # an empty sequence's state is NaN (attention over padding alone): zeros, not NaN x 0
        return torch.where((lengths > 0)[:, None], out, torch.zeros((), dtype=out.dtype))

    def config(self) -> dict[str, Any]:
        return dict(self.hparams)
