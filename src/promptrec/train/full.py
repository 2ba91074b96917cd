"""Full mode: tune the language model itself on prompts, through ``peft``.

Two peft methods (``TrainConfig.peft_method``): LoRA, or prefix tuning (learned soft-prompt
tokens: a key and a value vector per token in every attention layer, the model's own weights
frozen). Prefix tuning adds keys and values, not tokens, so each text's output keeps its own
length and the encoder's mean pooling and attention mask stay valid (BERT shifts the position
ids by the prefix length); prompt tuning of the input embeddings would prepend output tokens
that the pooling's attention mask does not know about, and is not offered.

The user tower is the language model reading the user's prompt (the configured prompt
strategy), the item tower the same model reading the item's text; both share the tuned
weights. Training pairs are (prompt of a history prefix, the next item); the loss is in-batch
softmax (InfoNCE) with a temperature, or BCE against the other in-batch items. Early stopping on
validation NDCG@10 (full ranking: the whole catalogue is re-encoded for each validation).

It runs on CPU for small data and on a GPU when one is present (picked automatically, bf16
autocast there). A checkpoint of the tuned parameters is written after every epoch and an
interrupted run resumes from it. Epoch 0, the language model untouched (no LoRA update, no
prefix), is validated too and kept when no tuned epoch beats it. LoRA is saved merged into a
plain sentence-transformers model (it loads like any encoder); a prefix is saved as a peft
adapter beside the base encoder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import leave_last_out
from promptrec.encoders.base import Encoder
from promptrec.encoders.sentence_transformer import SentenceTransformerEncoder, default_model_path
from promptrec.errors import ConfigError, ModelError
from promptrec.evaluation.metrics import ndcg_at
from promptrec.prompts.users import PromptCatalog, get_strategy
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers.text import PromptScorer, TextSpace
from promptrec.train.checkpoints import load_checkpoint, save_checkpoint, seed_everything
from promptrec.train.config import TrainConfig
from promptrec.train.folder import FORMAT_VERSION, catalogue_fingerprint, log_fingerprint
from promptrec.version import __version__

log = logging.getLogger("promptrec")
PROMPT_TOKENS = 128
ADAPTER_DIR = "prefix"  # the peft adapter of a prefix-tuned model, inside the model directory
# peft drops BERT's token type ids (all zero for one-segment texts) and passes the prefix as
# `past_key_values`; both warn on every call, and neither is the user's to act on
warnings.filterwarnings("ignore", message="Token type ids are not supported for parameter")
warnings.filterwarnings(
    "ignore", message=r"`past_key_values` is deprecated", category=FutureWarning
)
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")


class TunableEncoder(SentenceTransformerEncoder):
    """A sentence-transformers model whose weights may be training (peft-wrapped).

    ``encode`` is the plain encoder's (sentence-transformers' length-sorted batches, no grad,
    eval mode), so a trained model scores exactly as it will once saved and loaded; ``forward``
    is the differentiable path for training. fp32 on CPU, bf16 autocast on a GPU.
    """

    def __init__(self, model: Any, name: str, device: str) -> None:
        self._adopt(model, device, "bf16" if device.startswith("cuda") else "fp32")
        self.name = name

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable, normalised embeddings ``[len(texts), dim]``."""
        feats = self.model.preprocess(list(texts))
        feats = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in feats.items()}
        with self._autocast():
            out = self.model(feats)["sentence_embedding"]
        return F.normalize(out.float(), dim=-1)


class FullTrainer:
    """Tune the language model (LoRA or prefix tuning) on (prompt, next item) pairs.

    Args:
        config: settings (``mode="full"``; ``peft_method``, ``lora_*`` or ``prefix_tokens``,
            ``loss`` of ``softmax`` (in-batch) or ``bce``, ``temperature``,
            ``prompt_strategy``...).
        checkpoint_dir: a checkpoint of the tuned parameters after every epoch, resumed from
            when present (``last.pt``).
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
        import transformers
        from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # "Loading weights", "Writing shards"
        cfg = self.config
        path = default_model_path() if cfg.encoder in ("default", "minilm") else cfg.encoder
        try:
            st = SentenceTransformer(path, device=self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"full mode needs a sentence-transformers model: {exc}") from exc
        st.max_seq_length = min(st.max_seq_length, PROMPT_TOKENS)
        if cfg.peft_method == "prefix":
            method: Any = PrefixTuningConfig(
                task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=cfg.prefix_tokens
            )
        else:
            method = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=["query", "value"],
            )
        try:
            st[0].model = get_peft_model(st[0].model, method)
        except ValueError as exc:  # e.g. no `query`/`value` modules in this architecture
            raise ConfigError(f"cannot apply {cfg.peft_method} to '{path}': {exc}") from exc
        return TunableEncoder(st, f"full:{cfg.encoder}:{cfg.peft_method}", self.device)

    def fit(self, data: Dataset) -> FullTunedScorer:
        cfg = self.config
        t0 = time.perf_counter()
        self._data_key = log_fingerprint(data)  # a checkpoint resumes only on the same log
        seed_everything(cfg.seed)
        enc = self._model()
        space = TextSpace(enc, cfg.item_template)
        language = space.prompter.language_of(data.items)
        name = space.prompter.resolve(data.items.columns, language)
        texts = space.prompter.texts(data.items, name)
        catalog = PromptCatalog.from_items(data.items, language)
        strategy = get_strategy(cfg.prompt_strategy)
        val = leave_last_out(data)["test"].sample(cfg.validation_users, cfg.seed)
        train_hist = [h for h in val.fit.histories() if len(h) >= 2]
        if not train_hist or not val.histories:
            raise ConfigError("full mode needs users with at least 3 interactions")
        params = [p for p in enc.model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(cfg.seed)
        run = _Progress(best=-1.0, best_epoch=0, history=[], best_state=None)
        first_epoch = self._resume(enc.model, optim, rng, run)
        if first_epoch == 1:
            # epoch 0, the language model untouched, competes too: tuning is kept only where
            # validation shows that it helps
            with _without_adapter(enc):
                run.best = self._validate(enc, texts, strategy, catalog, val)
            run.history.append({"epoch": 0, "loss": None, "ndcg10": round(run.best, 6)})
        for epoch in tqdm(
            range(first_epoch, cfg.epochs + 1),
            initial=first_epoch - 1,
            total=cfg.epochs,
            disable=not self.progress,
            desc="train",
            unit="epoch",
        ):
            enc.model.train()
            order = rng.permutation(len(train_hist))
            losses = []
            for start in range(0, len(order), cfg.batch_size):
                batch = [train_hist[i] for i in order[start : start + cfg.batch_size]]
                # one random next-item target per user per epoch
                cuts = [int(rng.integers(1, len(h))) for h in batch]
                prompts = [
                    strategy.build(
                        _history_before(h, c), catalog, enc.count_tokens, PROMPT_TOKENS
                    ).text
                    for h, c in zip(batch, cuts, strict=True)
                ]
                targets = [int(h.items[c]) for h, c in zip(batch, cuts, strict=True)]
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
            run.history.append(
                {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "ndcg10": round(ndcg, 6)}
            )
            if ndcg > run.best:
                run.best, run.best_epoch, run.best_state = ndcg, epoch, tuned_weights(enc.model)
            self._checkpoint(enc.model, optim, rng, run, epoch)
            if epoch - run.best_epoch >= cfg.patience:
                break
            if cfg.max_minutes and time.perf_counter() - t0 > cfg.max_minutes * 60:
                log.warning("stopping: the %.0f-minute time cap was reached", cfg.max_minutes)
                break
        st = enc.model
        if run.best_state is None:
            log.warning(
                "tuning did not improve validation NDCG@10 on the untuned model (%.4f): the "
                "untuned model is kept",
                run.best,
            )
            st[0].model = _untuned_base(st[0].model)
        else:
            st.load_state_dict(run.best_state, strict=False)
            if cfg.peft_method == "lora":
                st[0].model = st[0].model.merge_and_unload()  # plain weights: no peft to load
        st.eval()
        enc.precision = "fp32"  # score as the saved model will once loaded (fp32)
        summary = {
            "best_epoch": run.best_epoch,
            "validation_ndcg10": round(run.best, 6),
            "validation_users": len(val.histories),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "refit": False,
        }
        scorer = FullTunedScorer(enc, cfg, {"summary": summary, "validation": run.history})
        return scorer.fit(data)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, model, optim, rng, run: _Progress, epoch: int) -> None:  # type: ignore[no-untyped-def]
        save_checkpoint(
            self.checkpoint_dir,
            self.config,
            self._data_key,
            {
                "epoch": epoch,
                "tuned": tuned_weights(model),
                "optim": optim.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "run": vars(run),
            },
        )

    def _resume(self, model, optim, rng, run: _Progress) -> int:  # type: ignore[no-untyped-def]
        ckpt = load_checkpoint(self.checkpoint_dir, self.config, self._data_key)
        if ckpt is None:
            return 1
        model.load_state_dict(ckpt["tuned"], strict=False)
        optim.load_state_dict(ckpt["optim"])
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        vars(run).update(ckpt["run"])
        log.info("resuming after epoch %d (best %d)", ckpt["epoch"], run.best_epoch)
        if ckpt["epoch"] - run.best_epoch >= self.config.patience:
            return self.config.epochs + 1  # it had stopped early: nothing left to train
        return int(ckpt["epoch"]) + 1

    def _validate(self, enc, texts, strategy, catalog, val) -> float:  # type: ignore[no-untyped-def]
        items = enc.encode(texts, batch_size=128)
        prompts = [
            strategy.build(h, catalog, enc.count_tokens, PROMPT_TOKENS).text for h in val.histories
        ]
        users = enc.encode(prompts, kind="query", batch_size=128)
        ranks = target_ranks(users @ items.T, val.targets, [h.items for h in val.histories])
        return ndcg_at(ranks, 10)


@dataclass
class _Progress:
    """Where early stopping stands: best validation NDCG@10, its epoch and tuned weights."""

    best: float
    best_epoch: int
    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor] | None  # None: the untuned model (epoch 0)


@contextlib.contextmanager
def _without_adapter(enc: TunableEncoder):  # type: ignore[no-untyped-def]
    """The language model as it was, for a while (LoRA starts there anyway: its update is 0)."""
    tuned = enc.model[0].model
    if not tuned.peft_config["default"].is_prompt_learning:
        yield
        return
    enc.model[0].model = tuned.get_base_model()  # prompt learning wraps without injecting
    try:
        yield
    finally:
        enc.model[0].model = tuned


def _untuned_base(tuned: Any) -> Any:
    """The language model without its peft adapter (LoRA layers removed unmerged)."""
    if tuned.peft_config["default"].is_prompt_learning:
        return tuned.get_base_model()
    return tuned.unload()


def tuned_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the parameters being tuned (the LoRA matrices or the prefix), by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _history_before(h: UserHistory, cut: int) -> UserHistory:
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
    ids = torch.tensor(targets, device=scores.device)
    same = ids[:, None] == ids[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool, device=scores.device)
    duplicate = same & ~eye  # another row's target equal to this row's: not a negative
    if loss == "softmax":
        logits = (scores / temperature).masked_fill(duplicate, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(targets), device=scores.device))
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
        st = self.space.encoder.model  # type: ignore[attr-defined]
        tuned = st[0].model
        adapter = hasattr(tuned, "get_base_model")  # a prefix (LoRA is merged, epoch 0 bare)
        if adapter:
            # the base encoder as it was, and the prefix as a peft adapter beside it
            st[0].model = tuned.get_base_model()
            try:
                st.save(str(out / "encoder"))
            finally:
                st[0].model = tuned
            tuned.save_pretrained(str(out / ADAPTER_DIR))
        else:
            st.save(str(out / "encoder"))
        config = {
            "format_version": FORMAT_VERSION,
            "promptrec_version": __version__,
            "kind": "lm-full",
            "train_config": self.config_.model_dump(),
            "peft_adapter": ADAPTER_DIR if adapter else None,
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
        if config.get("peft_adapter"):
            from peft import PeftModel

            adapter = Path(directory) / str(config["peft_adapter"])
            files = ("adapter_config.json", "adapter_model.safetensors")
            if not all((adapter / f).is_file() for f in files):
                raise ModelError(f"{adapter}: a prefix-tuned model needs {' and '.join(files)}")
            st = enc.model  # type: ignore[attr-defined]
            try:
                st[0].model = PeftModel.from_pretrained(st[0].model, str(adapter)).eval()
            except (OSError, ValueError, RuntimeError) as exc:  # damaged or for another model
                raise ModelError(f"{adapter}: cannot load the prefix: {exc}") from exc
            enc.name += f":{adapter.name}"
        info = {k: config[k] for k in ("validation", "summary", "train_log") if k in config}
        return cls(enc, cfg, info)
