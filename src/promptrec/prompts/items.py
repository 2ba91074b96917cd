"""Item prompts: turn a catalogue row into text, with a template chosen for its domain.

Catalogues name the same thing differently (``title``, ``name``, ``headline``; ``categories``
as a list, a ``>`` path or a string). :func:`normalise_fields` maps them onto one vocabulary,
then a domain template renders them:

========  ==================================================  ===========================
domain    chosen when the catalogue has                        template
========  ==================================================  ===========================
ad        ``advertiser`` or ``ad_copy``/``copy``              ``item_ad.j2``
article   ``headline``, ``abstract`` or ``topic``             ``item_article.j2``
film      ``genres``/``genre`` (and no price or brand)        ``item_film.j2``
product   ``brand``, ``price`` or ``categories``              ``item_product.j2``
generic   anything else: every field as ``name: value``       ``item_generic.j2``
========  ==================================================  ===========================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pandas as pd

from promptrec.errors import ConfigError
from promptrec.prompts.language import (
    DETECTION_SAMPLE,
    Language,
    detect_language,
    language_of_template,
    localized,
)
from promptrec.prompts.templates import load_template, render

Domain = Literal["product", "film", "article", "ad", "generic"]
DOMAINS: tuple[Domain, ...] = ("product", "film", "article", "ad", "generic")

# our name -> the names catalogues use for it, first match wins
ALIASES: dict[str, tuple[str, ...]] = {
    "title": ("title", "name", "headline", "product_name", "movie_title", "item_name"),
    "brand": ("brand", "advertiser", "manufacturer", "author", "publisher", "artist"),
    "category": (
        "categories",
        "category",
        "category_path",
        "landing_category",
        "section",
        "department",
    ),
    "genres": ("genres", "genre", "class"),
    "year": ("year", "release_year"),
    "price": ("price",),
    "topic": ("topic", "subject"),
    "description": ("description", "abstract", "ad_copy", "copy", "summary", "body", "text"),
    "tags": ("tags", "keywords"),
}
_NOT_TEXT = {"item_id", "asin", "url", "imdb_url", "image", "image_url", "sales_rank"}
MAX_DESCRIPTION_WORDS = 60


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    if isinstance(value, (list, tuple)) and not value:
        return True
    return False


def _as_text(value: Any, sep: str = ", ") -> str:
    if isinstance(value, (list, tuple)):
        return sep.join(str(v) for v in value if not _is_missing(v))
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from parquet
        return _as_text(value.tolist(), sep)
    return str(value).strip()


def _first(record: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        if name in record and not _is_missing(record[name]):
            return record[name]
    return None


def _truncate_words(text: str, n: int) -> str:
    words = text.split()
    return text if len(words) <= n else " ".join(words[:n]) + " ..."


def _normalised(ours: str, value: Any) -> Any:
    """One raw value (the first present of ``ALIASES[ours]``) as :func:`normalise_fields`
    gives it."""
    if value is None:
        return "" if ours == "title" else None
    if ours == "category":
        return _as_text(value, sep=" > ")
    if ours == "price":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if ours == "description":
        return _truncate_words(_as_text(value), MAX_DESCRIPTION_WORDS)
    text = _as_text(value)
    return text.split(".")[0] if ours == "year" else text  # year 1995.0 -> 1995


def normalise_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Map a catalogue row onto promptrec's field names (see ``ALIASES``)."""
    return {ours: _normalised(ours, _first(record, names)) for ours, names in ALIASES.items()}


def first_values(items: pd.DataFrame, names: Iterable[str]) -> list[Any]:
    """Per row, the first present (non-missing) value among the columns ``names``, or None:
    :func:`_first` of every row, a column at a time (no record per row)."""
    columns = [items[name].tolist() for name in names if name in items.columns]
    if not columns:
        return [None] * len(items)
    if len(columns) == 1:
        return [None if _is_missing(v) else v for v in columns[0]]
    out = []
    for values in zip(*columns, strict=True):
        out.append(next((v for v in values if not _is_missing(v)), None))
    return out


def field_values(items: pd.DataFrame, ours: str) -> list[Any]:
    """``normalise_fields(row)[ours]`` of every row (``ours`` a key of ``ALIASES``), a column
    at a time: what per-item labels and filters need, at a fraction of the cost of records."""
    return [_normalised(ours, v) for v in first_values(items, ALIASES[ours])]


def category_levels(path: object) -> list[str]:
    """A category path's levels, broadest first: "Beauty > Makeup > Nail Polish" (or
    "Beauty>Makeup>Nail Polish") gives ``["Beauty", "Makeup", "Nail Polish"]``; a missing or
    blank one gives ``[]``. Every reader of category paths (prompts, queries, filters) splits
    them here."""
    if path is None or _is_missing(path):
        return []
    return [level.strip() for level in str(path).split(">") if level.strip()]


def detect_domain(columns: Iterable[str]) -> Domain:
    """Pick the item template from the catalogue's column names."""
    cols = {c.lower() for c in columns}
    if cols & {"advertiser", "ad_copy", "copy", "landing_category"}:
        return "ad"
    if cols & {"headline", "abstract", "topic"}:
        return "article"
    if cols & {"genres", "genre", "class"} and not cols & {"price", "brand"}:
        return "film"
    if cols & {"brand", "price", "categories", "category", "category_path"}:
        return "product"
    return "generic"


class ItemPrompter:
    """Renders item text for the encoder and short labels for user prompts.

    Args:
        template: a domain name (``"product"``, ``"film"``...), a shipped template's name
            (``item_product``, or ``item_product.zh`` in a given language), a ``.j2`` path of
            your own, or None to pick the domain from the catalogue's columns at :meth:`texts`.
        language: the shipped templates' language (``en``, ``zh``); None picks it from the
            catalogue's titles (:func:`~promptrec.prompts.language.detect_language`).

    A custom template sees the normalised fields (``title``, ``brand``, ``category``,
    ``genres``, ``year``, ``price``, ``topic``, ``description``, ``tags``), ``item`` (the raw
    row) and ``fields`` (the raw row's non-empty text fields as ``(name, value)`` pairs).
    """

    def __init__(self, template: str | None = None, language: Language | None = None) -> None:
        self.template = template
        self.language = language

    def language_of(self, items: pd.DataFrame) -> Language:
        """The language of this catalogue's prompts: the one the template spells, else the one
        given, else the titles' (:func:`~promptrec.prompts.language.detect_language`)."""
        spelled = language_of_template(self.template) if self.template else None
        if spelled is not None:
            return spelled
        if self.language is not None:
            return self.language
        sample = items.head(DETECTION_SAMPLE)  # not every title of a million-item catalogue
        return detect_language(first_values(sample, ALIASES["title"]))

    def resolve(self, columns: Iterable[str], language: Language = "en") -> str:
        """The template this prompter uses for a catalogue with these columns and language."""
        if self.template is None:
            return localized(f"item_{detect_domain(columns)}", language)
        if self.template in DOMAINS:
            return localized(f"item_{self.template}", language)
        if self.template.startswith("item_"):
            return localized(self.template, language)
        return self.template  # a file path

    def text(self, record: Mapping[str, Any], template_name: str) -> str:
        fields = [
            (k, _as_text(v))
            for k, v in record.items()
            if k not in _NOT_TEXT and not _is_missing(v) and not k.startswith("_")
        ]
        context = normalise_fields(record)
        text = render(load_template(template_name), **context, item=record, fields=fields)
        return text or str(record.get("item_id", ""))

    def texts(self, items: pd.DataFrame, template_name: str | None = None) -> list[str]:
        """The encoder text of every catalogue row, in row order (with ``template_name``, else
        the one :meth:`resolve` picks for this catalogue)."""
        name = template_name or self.resolve(items.columns, self.language_of(items))
        load_template(name)  # fail early on a bad template
        return [self.text(rec, name) for rec in items.to_dict("records")]

    @staticmethod
    def labels(items: pd.DataFrame, max_words: int = 16) -> list[str]:
        """Short names for items inside user prompts and explanations (title, else first text)."""
        titles = first_values(items, ALIASES["title"])
        untitled = [i for i, t in enumerate(titles) if t is None]
        if untitled:  # the first text field of the row, else its id
            for i, rec in zip(untitled, items.iloc[untitled].to_dict("records"), strict=True):
                text_fields = [
                    v for k, v in rec.items() if k not in _NOT_TEXT and isinstance(v, str) and v
                ]
                titles[i] = text_fields[0] if text_fields else rec.get("item_id", "")
        return [_truncate_words(_as_text(t), max_words) for t in titles]


def validate_domain(template: str | None) -> None:
    if template is not None and template not in DOMAINS and not template.endswith(".j2"):
        raise ConfigError(
            f"unknown item template '{template}': use one of {list(DOMAINS)} or a .j2 file"
        )
