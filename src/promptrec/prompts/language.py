"""The language of a catalogue's prompts: English, or Chinese for a Chinese shop.

Every shipped template has an English file (``item_product.j2``) and a Chinese one
(``item_product.zh.j2``). Which one renders a catalogue is picked from its item titles
(:func:`detect_language`) unless a template names its language (``item_product.zh``, or
``item_product.en`` for the English one on a Chinese catalogue).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Literal

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
#: a Chinese character carries about as much as three Latin letters (a word of English)
_HAN_WEIGHT = 3


#: how many texts decide a catalogue's language
DETECTION_SAMPLE = 2000


def detect_language(texts: Iterable[object], sample: int = DETECTION_SAMPLE) -> Language:
    """``"zh"`` when the first ``sample`` texts are mostly Chinese (counting each Chinese
    character as three Latin letters: titles such as "Apple iPhone 15 黑色 256GB" mix both),
    else ``"en"``."""
    han = latin = 0
    for text in itertools.islice((t for t in texts if isinstance(t, str) and t), sample):
        han += len(_HAN.findall(text))
        latin += len(_LATIN.findall(text))
    return "zh" if han and han * _HAN_WEIGHT >= latin else "en"


def language_of_template(name: str) -> Language | None:
    """The language a template's name spells (``item_product.zh``), or None."""
    stem, _, suffix = name.rpartition(".")
    return suffix if stem and suffix in LANGUAGES else None  # type: ignore[return-value]


def localized(name: str, language: Language) -> str:
    """The shipped template ``name`` in ``language`` (``user_sectioned`` ->
    ``user_sectioned.zh``): a name that spells its language keeps it (``.en`` is the English
    file), and a file path of the user's is theirs."""
    from promptrec.prompts.templates import TEMPLATE_DIR

    spelled = language_of_template(name)
    if spelled is not None:
        stem = name.rpartition(".")[0]
        return stem if spelled == "en" else name
    if language == "en" or not (TEMPLATE_DIR / f"{name}.{language}.j2").exists():
        return name
    return f"{name}.{language}"
