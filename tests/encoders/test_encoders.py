"""Encoders: the offline default, the multilingual backend on Chinese text, a remote endpoint,
and the on-disk cache."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest

from promptrec import Recommender
from promptrec.data.dataset import Dataset
from promptrec.encoders import CachedEncoder, load_encoder
from promptrec.errors import ConfigError


def test_default_encoder_vectors(encoder) -> None:
    v = encoder.encode(["red lipstick", "crimson lip colour", "car tyre"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert encoder.count_tokens("red lipstick") == 4  # [CLS] red lipstick [SEP]
    assert encoder.max_tokens == 256


def test_cache_skips_known_texts(tmp_path) -> None:
    enc = load_encoder("default", cache_dir=tmp_path)
    assert isinstance(enc, CachedEncoder)
    first = enc.encode(["a b", "c d", "a b"])
    assert (enc.misses, enc.hits) == (2, 1)
    again = load_encoder("default", cache_dir=tmp_path)  # a new process would see the same file
    second = again.encode(["c d", "a b", "e f"])
    assert (again.misses, again.hits) == (1, 2)
    np.testing.assert_array_equal(second[1], first[0])
    # queries and documents are cached apart (asymmetric models embed them differently)
    again.encode(["a b"], kind="query")
    assert again.misses == 2


def test_an_interrupted_encoding_resumes_where_it_stopped(tmp_path, monkeypatch) -> None:
    """A crash part way through a catalogue keeps the chunks already written: the next run
    encodes only the rest."""
    from promptrec.encoders import cache
    from promptrec.encoders.hashing import HashingEncoder

    monkeypatch.setattr(cache, "_WRITE_CHUNK", 10)
    texts = [f"argan shampoo {n}" for n in range(35)]
    inner = HashingEncoder(dim=16)
    encode, calls = inner.encode, []

    def crash_on_third_chunk(batch, **kwargs):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is stopped mid-way
        return encode(batch, **kwargs)

    monkeypatch.setattr(inner, "encode", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        CachedEncoder(inner, tmp_path).encode(texts)
    monkeypatch.setattr(inner, "encode", encode)
    again = CachedEncoder(inner, tmp_path)
    vectors = again.encode(texts)
    assert (again.hits, again.misses) == (20, 15)
    np.testing.assert_array_equal(vectors, encode(texts))


def test_two_services_starting_together_encode_a_catalogue_once(tmp_path) -> None:
    """Two encoders on one cache folder (two workers of a service, each with its own file
    handle: the lock is the file's, as between processes): while the first encodes a
    catalogue, the second waits for it and then reads every vector from the cache."""
    from promptrec.encoders.hashing import HashingEncoder

    texts = [f"rose water toner {n}" for n in range(400)]  # above SHARED_FROM
    started = threading.Event()

    class Slow(HashingEncoder):
        calls = 0

        def encode(self, batch, **kwargs):  # type: ignore[no-untyped-def, override]
            type(self).calls += 1
            started.set()
            threading.Event().wait(0.5)  # long enough for the second to come in meanwhile
            return super().encode(batch, **kwargs)

    first, second = CachedEncoder(Slow(dim=16), tmp_path), CachedEncoder(Slow(dim=16), tmp_path)
    results: dict[str, np.ndarray] = {}
    leader = threading.Thread(target=lambda: results.setdefault("a", first.encode(texts)))
    leader.start()
    assert started.wait(10)
    results["b"] = second.encode(texts)
    leader.join()
    assert Slow.calls == 1  # the first encoder's one chunk; the second encoded nothing
    assert (second.hits, second.misses) == (400, 0)
    np.testing.assert_array_equal(results["a"], results["b"])


CHINESE_ITEMS = pd.DataFrame(
    [
        {
            "item_id": "1",
            "title": "迪奥烈焰蓝金口红 999 正红色",
            "brand": "迪奥",
            "categories": ["美妆", "唇部"],
        },
        {
            "item_id": "2",
            "title": "雅诗兰黛小棕瓶精华液 50毫升",
            "brand": "雅诗兰黛",
            "categories": ["美妆", "护肤"],
        },
        {
            "item_id": "3",
            "title": "华为手机保护壳 透明防摔",
            "brand": "华为",
            "categories": ["数码", "配件"],
        },
        {
            "item_id": "4",
            "title": "圣罗兰小金条哑光唇膏 豆沙色",
            "brand": "圣罗兰",
            "categories": ["美妆", "唇部"],
        },
        {
            "item_id": "5",
            "title": "小米充电宝 20000毫安",
            "brand": "小米",
            "categories": ["数码", "电源"],
        },
    ]
)


@pytest.fixture(scope="module")
def multilingual():
    return load_encoder("multilingual", num_threads=1)


def test_multilingual_encoder_on_chinese_products(multilingual) -> None:
    from promptrec.prompts.items import ItemPrompter

    texts = ItemPrompter().texts(CHINESE_ITEMS)
    assert texts[0].startswith("迪奥烈焰蓝金口红")
    items = multilingual.encode(texts, kind="document")
    query = multilingual.encode(["红色口红"], kind="query")[0]
    assert int(np.argmax(items @ query)) in (0, 3)  # a lipstick, not a phone case
    english = multilingual.encode(["phone case"], kind="query")[0]
    assert int(np.argmax(items @ english)) == 2  # cross-lingual
    assert multilingual.count_tokens("红色口红") > 2


def test_chinese_recommendations_end_to_end(multilingual) -> None:
    events = pd.DataFrame(
        {"user_id": ["u", "u", "v"], "item_id": ["1", "3", "5"], "timestamp": [1, 2, 1]}
    )
    data = Dataset(CHINESE_ITEMS, events, "zh")
    rec = Recommender("mean-of-items", encoder=multilingual).fit(data)
    [r] = rec.recommend(["v"], n=2, query="唇膏", explain=True)
    assert r.item_ids[0] in ("1", "4")
    assert r.items[0].explanation.because[0].item_id == "5"


class _Embeddings(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Embeddings.seen_auth.append(self.headers.get("Authorization", ""))
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model exploded")
            return
        data = [
            {"index": i, "embedding": [float(len(t)), 1.0, float(t.startswith("query: "))]}
            for i, t in enumerate(body["input"])
        ][::-1]  # out of order on purpose: the client must sort by index
        out = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def embeddings_server():
    server = HTTPServer(("127.0.0.1", 0), _Embeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_openai_compatible_endpoint(embeddings_server) -> None:
    enc = load_encoder(
        "openai:tiny",
        cache=False,
        base_url=embeddings_server,
        api_key="sekret",
        query_prefix="query: ",
    )
    v = enc.encode(["ab", "abcd", "a"], batch_size=2)
    expected = np.array([[2, 1, 0], [4, 1, 0], [1, 1, 0]], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    q = enc.encode(["ab"], kind="query")
    assert q[0, 2] > 0  # the query prefix was sent
    assert _Embeddings.seen_auth[-1] == "Bearer sekret"
    broken = load_encoder("openai:broken", cache=False, base_url=embeddings_server)
    with pytest.raises(ConfigError, match="500"):
        broken.encode(["x"])


def test_openai_encoder_needs_a_url(monkeypatch) -> None:
    monkeypatch.delenv("PROMPTREC_OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="base URL"):
        load_encoder("openai:x", cache=False)


def test_unknown_model_path_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        load_encoder(str(tmp_path / "no-such-model"), cache=False)
