"""Prompts: item text from catalogue fields, user prompts from behaviour (a class per strategy)."""

from promptrec.prompts.items import DOMAINS, ItemPrompter, detect_domain, normalise_fields
from promptrec.prompts.users import (
    STRATEGIES,
    PromptCatalog,
    PromptStrategy,
    UserPrompt,
    build_prompts,
    get_strategy,
)

__all__ = [
    "DOMAINS",
    "ItemPrompter",
    "PromptCatalog",
    "PromptStrategy",
    "STRATEGIES",
    "UserPrompt",
    "build_prompts",
    "detect_domain",
    "get_strategy",
    "normalise_fields",
]
