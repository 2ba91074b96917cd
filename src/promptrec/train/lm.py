"""The language model as full mode tunes it: a BERT-style sentence encoder split in two.

The lower layers stay frozen and the upper ``tuned_layers`` get LoRA updates (``peft``). Item
texts do not change between steps, so the lower layers' outputs for every item are computed
once and kept (:class:`ItemStates`): an item's vector then costs the upper layers alone, and
every item's vector (the negatives of a catalogue-wide softmax) can be refreshed cheaply. A
user prompt changes with every target, so it runs through the lower layers without gradients
and through the upper ones with them.

The pooling is the sentence-transformers model's own (mean or CLS), then unit length as every
promptrec encoder's vectors, so a tuned model, merged and saved, encodes as it was trained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from promptrec.errors import ConfigError

#: the modules of a BERT layer that LoRA updates: attention (query, key, value, output) and the
#: feed-forward layers (every ``dense``)
LORA_MODULES = ["query", "key", "value", "dense"]
#: how the lower layers' outputs are kept (float16: within 3e-5 of float32 on item vectors)
STATE_DTYPE = torch.float16


class LayeredEncoder:
    """A sentence-transformers model (BERT-style: ``embeddings`` and ``encoder.layer``) whose
    upper ``tuned_layers`` layers carry LoRA updates.

    Args:
        st: the sentence-transformers model (changed in place: LoRA is injected).
        tuned_layers: how many of the top layers are tuned.
        lora_r / lora_alpha / lora_dropout: the LoRA settings.
        max_tokens: texts are truncated to this many tokens (as the saved model will).
        device: where it runs.
    """

    def __init__(
        self,
        st: Any,
        *,
        tuned_layers: int,
        lora_r: int,
        lora_alpha: int,
        lora_dropout: float,
        max_tokens: int,
        device: str = "cpu",
    ) -> None:
        from peft import LoraConfig, get_peft_model

        self.st = st
        self.device = device
        bert = st[0].model
        if not hasattr(bert, "embeddings") or not hasattr(getattr(bert, "encoder", None), "layer"):
            raise ConfigError(
                f"full mode tunes BERT-style encoders (embeddings + encoder.layer); "
                f"{type(bert).__name__} is not one"
            )
        pooling = st[1].get_config_dict().get("pooling_mode") if len(st) > 1 else None
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"full mode needs mean or CLS pooling, not {pooling!r}")
        self.pooling = pooling
        n_layers = len(bert.encoder.layer)
        if not 1 <= tuned_layers <= n_layers:
            raise ConfigError(f"tuned_layers must be 1..{n_layers}, not {tuned_layers}")
        self.split = n_layers - tuned_layers
        lora = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=LORA_MODULES,
            layers_to_transform=list(range(self.split, n_layers)),
            layers_pattern="layer",
        )
        self.peft = get_peft_model(bert, lora)
        st[0].model = self.peft
        self.bert = bert  # the same modules, LoRA injected into the upper layers
        self.tokenizer = st[0].tokenizer
        self.max_tokens = max_tokens
        st.max_seq_length = max_tokens
        st.to(device)
        self.training = False
        self.train(False)

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> list[torch.nn.Parameter]:
        """The tuned parameters (the LoRA matrices)."""
        return [p for p in self.peft.parameters() if p.requires_grad]

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """A copy of the tuned parameters, by name."""
        return {n: p.detach().clone() for n, p in self.peft.named_parameters() if p.requires_grad}

    def load_tuned_state(self, state: dict[str, torch.Tensor]) -> None:
        self.peft.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> None:
        """Training mode: the LoRA dropout (``lora_dropout``) on, and nothing else. The
        language model's own dropout stays off: the frozen layers' outputs are then the same
        at every step (and may be kept), every vector of a step is computed the same way,
        and dropout's random masks took a third of a step's time on a CPU."""
        self.st.eval()
        self.training = mode
        for name, module in self.peft.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                module.train(mode)

    def merged(self) -> Any:
        """The sentence-transformers model with the LoRA updates merged into plain weights
        (the tuned encoder as it is saved); this encoder is no longer tunable after."""
        self.st[0].model = self.peft.merge_and_unload()
        self.st.eval()
        return self.st

    # ------------------------------------------------------------------ the forward pass
    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and token types of ``texts``, padded, on the device."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def lower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen lower layers' output ``[n, length, width]`` (never any gradient)."""
        with torch.no_grad():
            h = self.bert.embeddings(
                input_ids=tokens["input_ids"], token_type_ids=tokens.get("token_type_ids")
            )
            mask = _additive(tokens["attention_mask"], h.dtype)
            for layer in self.bert.encoder.layer[: self.split]:
                h = _output(layer(h, attention_mask=mask))
        return h

    def upper(self, hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The tuned upper layers over ``hidden``, pooled: ``[n, width]`` sentence vectors
        (with gradients where the caller allows them)."""
        mask = _additive(attention, hidden.dtype)
        h = hidden
        for layer in self.bert.encoder.layer[self.split :]:
            h = _output(layer(h, attention_mask=mask))
        if self.pooling == "cls":
            out = h[:, 0]
        else:
            weights = attention[..., None].to(h.dtype)
            out = (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return F.normalize(out, dim=-1)  # as every promptrec encoder's vectors

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence vectors of ``texts``: lower layers without gradients, upper with."""
        tokens = self.tokens(texts)
        return self.upper(self.lower(tokens), tokens["attention_mask"])

    def encode_all(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Sentence vectors of many texts, no gradients, in length-sorted batches."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        with torch.no_grad(), self.evaluating():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = self.encode([texts[r] for r in rows]).float().cpu().numpy()
        return out

    @property
    def width(self) -> int:
        return int(self.bert.config.hidden_size)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Evaluation mode (no dropout) for a while."""
        was = self.training
        self.train(False)
        try:
            yield
        finally:
            self.train(was)


class ItemStates:
    """Every item text's lower-layer output, computed once (float16 on the CPU, each item at
    its own length), and the item vectors the upper layers make of them.

    Args:
        encoder: the layered encoder.
        texts: the item texts, in catalogue order.
        batch_size: texts per forward pass while the states are computed.
    """

    def __init__(
        self, encoder: LayeredEncoder, texts: Sequence[str], batch_size: int = 256
    ) -> None:
        self.encoder = encoder
        self.states: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            tokens = encoder.tokens([texts[r] for r in rows])
            hidden = encoder.lower(tokens).to("cpu", STATE_DTYPE)
            lengths = tokens["attention_mask"].sum(1).tolist()
            for row, h, n in zip(rows, hidden, lengths, strict=True):
                self.states[row] = h[:n].clone()
        self.lengths = np.array([len(s) for s in self.states], dtype=np.int64)
        self._by_length = np.argsort(self.lengths, kind="stable")

    def __len__(self) -> int:
        return len(self.states)

    def vectors(self, items: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The vectors of ``items`` through the upper layers (gradients where allowed)."""
        items = np.asarray(items, dtype=np.int64)
        hidden = torch.nn.utils.rnn.pad_sequence(
            [self.states[i] for i in items], batch_first=True
        ).to(self.encoder.device, torch.float32)
        lengths = torch.as_tensor(self.lengths[items], device=self.encoder.device)
        attention = torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]
        return self.encoder.upper(hidden, attention.long())

    def all_vectors(self, batch_size: int = 512) -> torch.Tensor:
        """Every item's vector ``[n_items, width]``, no gradients (length-sorted batches)."""
        out = torch.zeros(len(self), self.encoder.width, device=self.encoder.device)
        with torch.no_grad(), self.encoder.evaluating():
            for start in range(0, len(self), batch_size):
                rows = self._by_length[start : start + batch_size]
                out[torch.as_tensor(rows, device=out.device)] = self.vectors(rows).float()
        return out


def _additive(attention: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A ``[n, 1, 1, length]`` additive mask: 0 where a token is attended, a large negative
    number at padding."""
    return (1.0 - attention[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _output(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result
