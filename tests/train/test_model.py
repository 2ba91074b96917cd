"""The two-tower model's parts."""

from __future__ import annotations

import torch
from torch import nn

from promptrec.train.model import ItemTower


def test_id_dropout_leaves_out_id_embeddings_in_training_only() -> None:
    """With ``id_dropout``, a training step scores a share of the candidates from their text
    alone (as a new item is scored); the history's items, and evaluation, keep every id."""
    torch.manual_seed(0)
    tower = ItemTower(text_dim=8, dim=4, n_items=2000, dropout=0.0, use_ids=True, id_dropout=0.5)
    nn.init.normal_(tower.ids.weight, std=1.0)
    text = torch.randn(2000, 8)
    text_only = tower.project_query(text)
    tower.train()
    alone = torch.isclose(tower(text, drop_ids=True), text_only).all(dim=1)
    assert 0.45 < alone.float().mean() < 0.55
    again = torch.isclose(tower(text, drop_ids=True), text_only).all(dim=1)
    assert 0.45 < again.float().mean() < 0.55 and (again != alone).any()  # drawn afresh
    assert not torch.isclose(tower(text), text_only).all(dim=1).any()  # inputs keep their ids
    tower.eval()
    assert not torch.isclose(tower(text, drop_ids=True), text_only).all(dim=1).any()
    # items chosen by index are dropped alike; the default keeps every id
    tower.train()
    picked = torch.arange(0, 2000, 2)
    dropped = torch.isclose(tower(text[picked], items=picked, drop_ids=True), text_only[picked])
    assert 0.4 < dropped.all(dim=1).float().mean() < 0.6
    plain = ItemTower(text_dim=8, dim=4, n_items=2000, dropout=0.0, use_ids=True)
    plain.train()
    assert not torch.isclose(plain(text, drop_ids=True), plain.project_query(text)).all(dim=1).any()
