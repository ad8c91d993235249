"""``liveagg.view_schemas``: the JSON Schema of liveagg views, shipped as package data.

The schema is a plain JSON file so that editors and other languages can use it too
(``"$schema": ".../view.schema.json"``); this module only finds and loads it.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

SCHEMA_FILE = "view.schema.json"
#: Filesystem path of the schema, for tools that want a file (editors, pre-commit, docs).
SCHEMA_PATH = Path(__file__).with_name(SCHEMA_FILE)


@cache
def _load() -> dict[str, Any]:
    return json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    """The view schema (draft 2020-12) as a dict.

    Parsed once per process; a deep copy is returned so that a caller changing it cannot
    change what every later validation sees.
    """
    return copy.deepcopy(_load())


def examples() -> dict[str, Any]:
    """The example views shipped with the package, by file stem (``"ad_impressions"``)."""
    folder = files(__package__).joinpath("examples")
    return {
        entry.name.removesuffix(".json"): json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }
