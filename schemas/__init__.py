"""Declarative data shipped with flowaudit (catalogue, output schemas)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(*parts: str) -> Path:
    """Filesystem path of a shipped schema file, e.g. ``path("catalog", "classes.toml")``."""
    return Path(str(resources.files(__name__).joinpath(*parts)))
