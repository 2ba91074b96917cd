"""How items are searched: :class:`IndexConfig`, and the constants the index kinds share.

:class:`IndexConfig` is a frozen pydantic model: built with keyword arguments
(``IndexConfig(kind="hnsw", ef_search=40)``) or from saved settings
(``IndexConfig(**meta["config"])``); a value that cannot work raises a
:class:`~promptrec.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, SkipValidation, model_validator

from promptrec.errors import ConfigError

IndexKind = Literal["auto", "exact", "hnsw", "milvus"]

#: the HNSW beam width of a graph built without users to calibrate it on
DEFAULT_EF_SEARCH = 256
#: the widest beam calibration tries (about 15 ms a query at a million 384-d items)
MAX_EF_SEARCH = 4096
#: users whose lists calibrate the beam width
CALIBRATION_USERS = 200
#: items a loaded graph can take before its arrays grow (a growth copies them all: 0.35 s at a
#: million items, once, on the first add after a start instead)
GROWTH_ROOM = 10_000
RESCORED = 4  # a compressed index re-scores this many times k candidates with exact vectors
#: a graph reused for a changed catalogue is built afresh instead once more than this share of
#: its nodes are dead (items no longer in the catalogue, or replaced)
REUSE_DEAD_SHARE = 0.25


class IndexConfig(BaseModel):
    """How items are searched.

    Attributes:
        kind: ``exact``, ``hnsw``, or ``auto``: exact up to ``auto_threshold`` items, HNSW
            above.
        auto_threshold: the catalogue size where ``auto`` switches to HNSW. Exact search of
            200k 384-d items takes about 13 ms a query on one core, HNSW under 1 ms; but an
            exact index needs no building, and a catalogue change rebuilds the graph.
        m: HNSW links per node (memory: about ``2 * m * 4`` bytes per item beside the vector).
        ef_construction: HNSW build-time beam width (higher: better graph, slower build).
        ef_search: HNSW query-time beam width (higher: better recall, slower queries); never
            less than the number of candidates asked for. None (the default): calibrated, the
            narrowest width from ``DEFAULT_EF_SEARCH`` (256) up whose recall@10 against exact
            search reaches ``target_recall`` for a sample of the catalogue's own users
            (:meth:`HNSWIndex.calibrate`), measured once when the graph is built and saved
            with it; 256 for a graph built without users. The width a catalogue needs depends
            on its vectors: 256 gave recall@10 0.988 on 30k product-like vectors (0.33 ms a
            query) but 0.80 on a million hashed ones, which need 4,096 (15 ms).
        target_recall: the recall@10 a calibrated ``ef_search`` reaches (the sample's recall
            must clear it by 1.64 standard errors: reached with 95% confidence).
        exact_below: a filter keeping at most this many items is answered exactly over them
            (their vectors gathered in blocks of 2,048: about 24 ms a query for 134,000 of a
            million 384-d items on one core). Graph search with a selective filter misses: at
            a million items, a category filter keeping 13% of them found 17% of the exact
            top-10 through the graph (faiss's id selector, even with a 30x wider beam), since
            the beam stays near the user and the category's items lie elsewhere.
        quantize: the HNSW graph keeps its vectors as 8-bit codes (faiss ``IndexHNSWSQ``): a
            quarter of the memory (0.66 GB instead of 1.8 GB at a million 384-d items, graph
            included). Its candidates are re-scored with the scorer's exact vectors, four times
            ``k`` of them: on 100k product vectors recall@10 was that of full-precision vectors
            (0.846 against 0.845 at ``ef_search`` 256), and search 20% faster.
        milvus_uri: with ``kind="milvus"``: a file path (embedded milvus-lite) or a server
            URI (see :mod:`promptrec.retrieval.milvus`).
        milvus_collection: the Milvus collection of the items.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # not checked by pydantic: an unknown kind gets the ConfigError of ``_check`` instead
    kind: Annotated[IndexKind, SkipValidation] = "auto"
    auto_threshold: int = 200_000
    m: int = 32
    ef_construction: int = 100
    ef_search: int | None = None
    target_recall: float | int = 0.95  # an int stays one, as given (in messages, when saved)
    exact_below: int = 200_000
    quantize: bool = True
    milvus_uri: str | None = None
    milvus_collection: str = "promptrec_items"

    @model_validator(mode="after")
    def _check(self) -> IndexConfig:
        # ConfigError is no ValueError: pydantic lets it through unwrapped
        if self.kind not in ("auto", "exact", "hnsw", "milvus"):
            raise ConfigError(f"index kind must be auto, exact, hnsw or milvus, not {self.kind!r}")
        if self.kind == "milvus" and not self.milvus_uri:
            raise ConfigError("a Milvus index needs a URI: a file path or http://host:19530")
        for name in ("auto_threshold", "m", "ef_construction", "ef_search", "exact_below"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"index setting {name} must be at least 1")
        if not 0 < self.target_recall <= 1:
            raise ConfigError(f"target_recall must be in (0, 1], not {self.target_recall}")
        return self

    def resolve(self, n_items: int) -> Literal["exact", "hnsw", "milvus"]:
        if self.kind == "auto":
            return "hnsw" if n_items > self.auto_threshold else "exact"
        return self.kind

    def built(self) -> dict:
        """The settings a saved index is built with (the others act at query time)."""
        searching = ("ef_search", "target_recall", "exact_below")
        return {k: v for k, v in self.model_dump().items() if k not in searching}
