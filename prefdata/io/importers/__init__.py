"""Importers for the public preference-data formats users hold.

Each importer is `import_<format>(path, *, options) -> Imported`: the tables it makes
(pairs, annotations, kto, prompts), the source rows that did not become data (with a
reason), and a report of counts. Nothing is dropped silently.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from prefdata.errors import InputError

# format name -> (module, function); imported lazily so `prefdata --help` stays fast. The one
# list of formats: the CLI's `prefdata import` and the pipeline's import stage both read it.
IMPORTERS: dict[str, tuple[str, str]] = {
    "hh-rlhf": ("prefdata.io.importers.hh_rlhf", "import_hh_rlhf"),
    "pandalm": ("prefdata.io.importers.pandalm", "import_pandalm"),
    "oasst": ("prefdata.io.importers.oasst", "import_oasst"),
    "rated": ("prefdata.io.importers.rated", "import_rated"),
    "hhh": ("prefdata.io.importers.hhh", "import_hhh"),
    "gsm8k": ("prefdata.io.importers.math", "import_gsm8k"),
    "gsm8k-solutions": ("prefdata.io.importers.math", "import_gsm8k_solutions"),
    "math500": ("prefdata.io.importers.math", "import_math500"),
    "trl": ("prefdata.io.importers.trl", "import_trl"),
    "openai": ("prefdata.io.importers.openai", "import_openai_dpo"),
    "feedback": ("prefdata.io.importers.feedback", "import_feedback"),
}


def importer(fmt: str) -> Callable[..., Any]:
    """The import function of format `fmt` (a key of IMPORTERS)."""
    if fmt not in IMPORTERS:
        raise InputError(f"unknown format '{fmt}'; choose one of: {', '.join(IMPORTERS)}")
    module, name = IMPORTERS[fmt]
    found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return found
