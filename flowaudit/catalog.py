"""The sensitive-data catalogue (schemas/catalog/*.toml) as Python lookups.

``classes.toml`` names each data class with a stable numeric code, a sensitivity level and the
source that makes it sensitive; the per-format files say where each class sits and are compiled
to numpy rule tables by the decoders in :mod:`flowaudit.decode`.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache

from flowaudit import schemas


@dataclass(frozen=True)
class DataClass:
    code: int
    name: str
    sensitivity: str
    description: str
    source: str


@dataclass(frozen=True)
class Catalog:
    version: str
    classes: dict[int, DataClass]

    def by_name(self, name: str) -> DataClass:
        for c in self.classes.values():
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in sorted(self.classes.values(), key=lambda c: c.code)]


@lru_cache(maxsize=1)
def load() -> Catalog:
    data = tomllib.loads(schemas.path("catalog", "classes.toml").read_text(encoding="utf-8"))
    classes = {}
    for name, spec in data["classes"].items():
        code = int(spec["code"])
        if code in classes:
            raise ValueError(f"catalog: class code {code} used twice ({classes[code].name}, {name})")
        classes[code] = DataClass(code, name, spec["sensitivity"], spec.get("description", ""), spec["source"])
    return Catalog(str(data["version"]), classes)
