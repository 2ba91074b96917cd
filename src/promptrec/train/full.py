"""Full mode: tune the language model itself on prompts, with LoRA (``peft``).

The user tower is the language model reading the user's prompt (the configured prompt
strategy), the item tower the same model reading the item's text; both share the LoRA-adapted
weights. Training pairs are (prompt of a history prefix, the next item); the loss is in-batch
softmax (InfoNCE) with a temperature, or BCE against the other in-batch items. Early stopping on
validation NDCG@10 (full ranking: the whole catalogue is re-encoded for each validation).

It runs on CPU for small data and on a GPU when one is present (picked automatically, bf16
autocast there). The result is saved as a merged sentence-transformers model inside the model
directory, so it loads like any encoder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptrec import __version__
from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import leave_last_out
from promptrec.encoders.base import Encoder, TextKind, normalise
from promptrec.errors import ConfigError
from promptrec.evaluation.metrics import ndcg_at
from promptrec.prompts.users import PromptCatalog, get_strategy
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers.text import PromptScorer, TextSpace
from promptrec.train.config import TrainConfig
from promptrec.train.trained import FORMAT_VERSION, catalogue_fingerprint, log_fingerprint
from promptrec.train.trainer import seed_everything

log = logging.getLogger("promptrec")
PROMPT_TOKENS = 128


class TunableEncoder(Encoder):
    """A sentence-transformers model whose weights may be training (LoRA-wrapped)."""

    def __init__(self, model: Any, name: str, device: str) -> None:
        self.model = model
        self.name = name
        self.device = device
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable, normalised embeddings ``[len(texts), dim]``."""
        feats = self.model.preprocess(list(texts))
        feats = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in feats.items()}
        out = self.model(feats)["sentence_embedding"]
        return F.normalize(out.float(), dim=-1)

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: TextKind = "document",
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        parts = []
        with torch.no_grad(), _autocast(self.device):
            for start in tqdm(
                range(0, len(texts), batch_size), disable=not show_progress, desc="encoding"
            ):
                parts.append(self.forward(texts[start : start + batch_size]).cpu().numpy())
        self.model.train(was_training)
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(np.concatenate(parts))

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, truncation=False, verbose=False)["input_ids"])


def _autocast(device: str):  # type: ignore[no-untyped-def]
    import contextlib

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class FullTrainer:
    """LoRA-tune the language model on (prompt, next item) pairs.

    Args:
        config: settings (``mode="full"``; ``lora_*``, ``loss`` of ``softmax`` (in-batch) or
            ``bce``, ``temperature``, ``prompt_strategy``...).
        checkpoint_dir: where the best adapter is kept during training.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        device: str | None = None,
    ) -> None:
        if config.loss == "sampled-softmax":
            raise ConfigError("full mode trains with in-batch negatives: loss softmax or bce")
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def _model(self) -> TunableEncoder:
        from peft import LoraConfig, get_peft_model
        from sentence_transformers import SentenceTransformer

        from promptrec.encoders.sentence_transformer import default_model_path

        cfg = self.config
        path = default_model_path() if cfg.encoder in ("default", "minilm") else cfg.encoder
        try:
            st = SentenceTransformer(path, device=self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"full mode needs a sentence-transformers model: {exc}") from exc
        st.max_seq_length = min(st.max_seq_length, PROMPT_TOKENS)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=["query", "value"],
        )
        st[0].model = get_peft_model(st[0].model, lora)
        return TunableEncoder(st, f"full:{cfg.encoder}", self.device)

    def fit(self, data: Dataset) -> FullTunedScorer:
        cfg = self.config
        t0 = time.perf_counter()
        seed_everything(cfg.seed)
        enc = self._model()
        space = TextSpace(enc, cfg.item_template)
        texts = space.prompter.texts(data.items)
        catalog = PromptCatalog.from_items(data.items)
        strategy = get_strategy(cfg.prompt_strategy)
        val = leave_last_out(data)["test"].sample(cfg.validation_users, cfg.seed)
        train_hist = [h for h in val.fit.histories() if len(h) >= 2]
        if not train_hist or not val.histories:
            raise ConfigError("full mode needs users with at least 3 interactions")
        params = [p for p in enc.model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_epoch, history = -1.0, 0, []
        best_state = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
        rng = np.random.default_rng(cfg.seed)
        for epoch in tqdm(
            range(1, cfg.epochs + 1), disable=not self.progress, desc="train", unit="epoch"
        ):
            enc.model.train()
            order = rng.permutation(len(train_hist))
            losses = []
            for start in range(0, len(order), cfg.batch_size):
                batch = [train_hist[i] for i in order[start : start + cfg.batch_size]]
                # one random next-item target per user per epoch
                cuts = [int(rng.integers(1, len(h))) for h in batch]
                prompts = [
                    strategy.build(_prefix(h, c), catalog, enc.count_tokens, PROMPT_TOKENS).text
                    for h, c in zip(batch, cuts, strict=True)
                ]
                targets = [int(h.items[c]) for h, c in zip(batch, cuts, strict=True)]
                with _autocast(self.device):
                    users = enc.forward(prompts)
                    items = enc.forward([texts[t] for t in targets])
                loss = _in_batch_loss(users, items, targets, cfg.loss, cfg.temperature)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optim.step()
                losses.append(float(loss.detach()))
            ndcg = self._validate(enc, texts, strategy, catalog, val)
            history.append(
                {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "ndcg10": round(ndcg, 6)}
            )
            if ndcg > best:
                best, best_epoch = ndcg, epoch
                best_state = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
            elif epoch - best_epoch >= cfg.patience:
                break
            if cfg.max_minutes and time.perf_counter() - t0 > cfg.max_minutes * 60:
                log.warning("stopping: the %.0f-minute time cap was reached", cfg.max_minutes)
                break
        enc.model.load_state_dict(best_state)
        st = enc.model
        st[0].model = st[0].model.merge_and_unload()  # plain weights: loads without peft
        enc.model = st
        summary = {
            "best_epoch": best_epoch,
            "validation_ndcg10": round(best, 6),
            "validation_users": len(val.histories),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "refit": False,
        }
        scorer = FullTunedScorer(enc, cfg, {"summary": summary, "validation": history})
        return scorer.fit(data)

    def _validate(self, enc, texts, strategy, catalog, val) -> float:  # type: ignore[no-untyped-def]
        items = enc.encode(texts, batch_size=128)
        prompts = [
            strategy.build(h, catalog, enc.count_tokens, PROMPT_TOKENS).text for h in val.histories
        ]
        users = enc.encode(prompts, kind="query", batch_size=128)
        ranks = target_ranks(users @ items.T, val.targets, [h.items for h in val.histories])
        return ndcg_at(ranks, 10)


def _prefix(h: UserHistory, cut: int) -> UserHistory:
    """The history before position ``cut`` (the target)."""
    return UserHistory(
        h.user_id,
        h.items[:cut],
        h.events[:cut],
        h.values[:cut],
        h.timestamps[:cut],
        h.queries[:cut],
    )


def _in_batch_loss(
    users: torch.Tensor, items: torch.Tensor, targets: list[int], loss: str, temperature: float
) -> torch.Tensor:
    scores = users @ items.T  # [B, B]; the diagonal holds the positives
    same = torch.tensor(targets)[:, None] == torch.tensor(targets)[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool)
    duplicate = same & ~eye  # another row's target equal to this row's: not a negative
    if loss == "softmax":
        logits = (scores / temperature).masked_fill(duplicate, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(targets)))
    raw = F.binary_cross_entropy_with_logits(scores, eye.float(), reduction="none")
    valid = (~duplicate).float()
    return (raw * valid).sum() / valid.sum()


class FullTunedScorer(PromptScorer):
    """A prompt strategy scored with the tuned language model."""

    def __init__(self, encoder: Encoder, config: TrainConfig, info: dict[str, Any]) -> None:
        super().__init__(
            config.prompt_strategy,
            TextSpace(encoder, config.item_template),
            max_tokens=PROMPT_TOKENS,
        )
        self.name = "trained-full"  # type: ignore[misc]
        self.config_ = config
        self.info = info

    def save(self, directory: str | Path, data: Dataset | None = None) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        enc = self.space.encoder
        enc.model.save(str(out / "encoder"))  # type: ignore[attr-defined]
        config = {
            "format_version": FORMAT_VERSION,
            "promptrec_version": __version__,
            "kind": "lm-full",
            "train_config": self.config_.model_dump(),
            "fingerprint": catalogue_fingerprint(data) if data is not None else None,
            "train_log": log_fingerprint(data) if data is not None else None,
            **self.info,
        }
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
        return out

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any]) -> FullTunedScorer:
        from promptrec.encoders import load_encoder

        cfg = TrainConfig(**config["train_config"])
        # fp32 as in training, so that a saved model scores exactly as the trained one
        enc = load_encoder(str(Path(directory) / "encoder"), cache=False, precision="fp32")
        info = {k: config[k] for k in ("validation", "summary", "train_log") if k in config}
        return cls(enc, cfg, info)
