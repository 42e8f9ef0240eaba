"""Message catalogues (``en.json``, ``zh-CN.json``): every string on the screen, in both languages.

Templates call ``t("key")``; the page scripts read the same catalogue from a JSON data block, so a language
switch changes every label. :func:`check_catalogues` is what the tests run: same keys, no empty string.
"""

from __future__ import annotations

import json
from functools import cache

from ui.assets import CATALOGUE_DIR
from ui.errors import CatalogueError
from ui.settings import LANGUAGES


@cache
def catalogue(language: str) -> dict[str, str]:
    """The catalogue of ``language`` (``zh-CN`` or ``en``)."""
    if language not in LANGUAGES:
        raise CatalogueError(f"no catalogue for language {language!r}; languages are {', '.join(LANGUAGES)}")
    path = CATALOGUE_DIR / f"{language}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise CatalogueError(f"{path} must be a JSON object of strings")
    return data


def translate(language: str, key: str, **values: object) -> str:
    """The string ``key`` in ``language`` with ``{name}`` placeholders filled; a missing key raises."""
    text = catalogue(language).get(key)
    if text is None:
        raise CatalogueError(f"message {key!r} is missing from ui/i18n/{language}.json; add it to both catalogues")
    return text.format(**values) if values else text


def check_catalogues() -> list[str]:
    """Problems found: keys present in one catalogue only, empty strings, placeholders that differ."""
    problems: list[str] = []
    cats = {lang: catalogue(lang) for lang in LANGUAGES}
    keys = set().union(*(c.keys() for c in cats.values()))
    for key in sorted(keys):
        for lang, cat in cats.items():
            if key not in cat:
                problems.append(f"{key}: missing in {lang}")
            elif not cat[key].strip():
                problems.append(f"{key}: empty in {lang}")
        present = [c[key] for c in cats.values() if key in c]
        holders = {frozenset(_placeholders(s)) for s in present}
        if len(holders) > 1:
            problems.append(f"{key}: placeholders differ between languages")
    return problems


def _placeholders(text: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(text) if name}
