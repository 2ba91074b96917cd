"""Jinja2 templates: the shipped ones (files in ``templates/``) or a user's own file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from promptrec.errors import ConfigError
from promptrec.privacy import redact

TEMPLATE_DIR = Path(__file__).parent / "templates"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=False,  # plain text for a language model, not HTML
    undefined=jinja2.ChainableUndefined,  # a missing field renders as nothing
    trim_blocks=True,
    keep_trailing_newline=False,
)


@lru_cache(maxsize=64)
def load_template(name_or_path: str) -> jinja2.Template:
    """A shipped template by name (``"item_product"``) or a ``.j2`` file path of the user's."""
    path = Path(name_or_path)
    try:
        if path.suffix in (".j2", ".jinja", ".jinja2", ".txt") and path.exists():
            return _ENV.from_string(path.read_text(encoding="utf-8"))
        return _ENV.get_template(f"{name_or_path}.j2")
    except jinja2.TemplateNotFound as exc:
        shipped = sorted(p.stem for p in TEMPLATE_DIR.glob("*.j2"))
        raise ConfigError(
            f"template '{name_or_path}' not found: give a .j2 file path or one of {shipped}"
        ) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template '{name_or_path}' line {exc.lineno}: {exc.message}") from exc


def render(template: jinja2.Template, **context: object) -> str:
    """Render, collapse whitespace (templates are written for people, prompts for models) and
    redact personal data (emails, phone numbers, street addresses): every item text and user
    prompt passes here before it reaches an encoder."""
    return redact(" ".join(template.render(**context).split()))
