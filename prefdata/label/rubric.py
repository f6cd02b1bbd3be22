"""Judge prompt templates (rubrics) and what a judge is asked to record.

    rubric = load_rubric("helpfulness")                  # pairwise: {first}, {second}
    scoring = load_pointwise_rubric("helpfulness")       # pointwise: {response}

A rubric file has a `### system` section (the criteria: the cacheable prefix) and a
`### user` section with the fields below (literal braces: {{ }}). Built-ins live in
prefdata/label/rubrics/ (<name>.txt pairwise, <name>.pointwise.txt pointwise).

A `Reading` is how an answer is recorded: remote judges fill a tool (`VERDICT_TOOL`, `SCORE_TOOL`:
forced tool use, or JSON output checked against its schema); a judge that reads next-token
probabilities is asked for one token (`choices`). A rubric's `version` hashes its template
together with its reading, so a changed template or schema never reuses a cached answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prefdata.errors import InputError

__all__ = [
    "BUILTIN_RUBRICS",
    "PAIRWISE",
    "POINTWISE",
    "RATINGS",
    "RATIONALE_CHARS",
    "SCORE_TOOL",
    "VERDICT_TOOL",
    "Reading",
    "Rubric",
    "load_pointwise_rubric",
    "load_rubric",
    "parse_template",
    "pointwise_rubric_for",
]

BUILTIN_RUBRICS = ("helpfulness", "harmlessness", "honesty", "instruction-following", "math")

# The verdict comes first and the rationale is bounded: a model answering under JSON-schema
# decoding writes the fields in this order, so a reply cut short (or a server that lets the
# model pad with whitespace until max tokens) never loses the verdict to a runaway rationale.
RATIONALE_CHARS = 200
VERDICT_TOOL: dict[str, Any] = {
    "name": "record_verdict",
    "description": "Record which response is better. A is the response shown first, B second.",
    "input_schema": {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["A", "B", "tie"]},
            "confidence": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "Probability that the verdict is right.",
            },
            "rationale": {
                "type": "string",
                "maxLength": RATIONALE_CHARS,
                "description": "One to three sentences on why.",
            },
        },
        "required": ["verdict", "rationale"],
    },
}

RATINGS: tuple[str, ...] = tuple(str(k) for k in range(1, 10))
SCORE_TOOL: dict[str, Any] = {
    "name": "record_score",
    "description": "Record how good the response is, from 1 (worst) to 9 (best).",
    "input_schema": {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 9},
            "rationale": {
                "type": "string",
                "maxLength": RATIONALE_CHARS,
                "description": "One to three sentences on why.",
            },
        },
        "required": ["score", "rationale"],
    },
}


@dataclass(frozen=True)
class Reading:
    """How a judge records its answer. Remote judges get `tool` and end their prompt with
    `tool_ask`; a judge that reads next-token probabilities gets `choices` (one token each)
    and `choice_ask`, which asks for exactly one of them."""

    kind: str  # "pairwise" | "pointwise"
    tool: dict[str, Any]
    tool_ask: str
    choices: tuple[str, ...]
    choice_ask: str
    fields: tuple[str, ...]  # the user template's fields
    required: tuple[str, ...]  # the fields it must contain


PAIRWISE = Reading(
    kind="pairwise",
    tool=VERDICT_TOOL,
    tool_ask="Record your verdict with the record_verdict tool: the verdict, then briefly why.",
    choices=("A", "B"),
    choice_ask="Answer with a single letter: A or B.",
    fields=("conversation", "first", "second", "reference_block"),
    required=("first", "second", "conversation"),
)
# Nine ratings, not ten: "10" is two tokens in the usual tokenizers, and a reading by next
# token needs every rating to be one token of its own.
POINTWISE = Reading(
    kind="pointwise",
    tool=SCORE_TOOL,
    tool_ask="Record your score with the record_score tool: the score, then briefly why.",
    choices=RATINGS,
    choice_ask="Answer with a single digit from 1 (worst) to 9 (best).",
    fields=("conversation", "response", "reference_block"),
    required=("conversation", "response"),
)


@dataclass(frozen=True)
class Rubric:
    """A judge prompt template: `system` (criteria, the cacheable prefix) and `user` with
    the fields of its `reading` ({conversation}, {first}, {second}, {reference_block} for a
    pairwise rubric; {conversation}, {response}, {reference_block} for a pointwise one)."""

    name: str
    system: str
    user: str
    reading: Reading = PAIRWISE

    @property
    def version(self) -> str:
        """Hash of the template, the schema and the asks: a changed one never reuses a
        cached answer, and provenance says exactly which prompt produced a vote."""
        r = self.reading
        material = json.dumps([self.system, self.user, r.tool, r.tool_ask, r.choice_ask])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def parse_template(
    text: str, source: str, *, fields: Sequence[str], required: Sequence[str]
) -> tuple[str, str]:
    """(system, user) from a template file's '### system' / '### user' sections; the user
    template must contain every field in `required` and no field outside `fields`."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip().lower()
        if stripped in ("### system", "### user"):
            current = stripped[4:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "user" not in sections:
        raise InputError(
            "a rubric file needs a '### user' section (and usually a '### system' one)",
            source=source,
        )
    user = "\n".join(sections["user"]).strip()
    for needed in required:
        if f"{{{needed}}}" not in user:
            raise InputError(f"the user template must contain {{{needed}}}", source=source)
    try:
        user.format(**dict.fromkeys(fields, ""))
    except (KeyError, IndexError, ValueError) as err:
        allowed = ", ".join(f"{{{f}}}" for f in fields)
        raise InputError(
            f"bad template field {err}; allowed: {allowed}; write literal braces as {{{{ and }}}}",
            source=source,
        ) from None
    return "\n".join(sections.get("system", [])).strip(), user


def _load(rubric: str | Path | Rubric, reading: Reading, suffix: str) -> Rubric:
    if isinstance(rubric, Rubric):
        if rubric.reading != reading:
            raise InputError(f"rubric {rubric.name!r} is not a {reading.kind} rubric")
        return rubric
    name = str(rubric)
    kind = "" if reading is PAIRWISE else f"{reading.kind} "
    if name in BUILTIN_RUBRICS:
        file = resources.files("prefdata.label").joinpath(f"rubrics/{name}{suffix}")
        text, source = file.read_text("utf-8"), f"built-in {kind}rubric {name}"
    else:
        path = Path(rubric)
        if not path.is_file():
            raise InputError(
                f"no {kind}rubric {name!r}: not a built-in ({', '.join(BUILTIN_RUBRICS)}) "
                "nor a file"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read the rubric: {err}", source=path) from None
        name, source = path.stem, str(path)
    system, user = parse_template(text, source, fields=reading.fields, required=reading.required)
    return Rubric(name, system, user, reading)


def load_rubric(rubric: str | Path | Rubric) -> Rubric:
    """A built-in pairwise rubric by name (BUILTIN_RUBRICS) or a template file of one's own
    with {conversation}, {first}, {second} (optional {reference_block})."""
    return _load(rubric, PAIRWISE, ".txt")


def load_pointwise_rubric(rubric: str | Path | Rubric) -> Rubric:
    """A built-in pointwise rubric by name (the names of BUILTIN_RUBRICS; the files are
    rubrics/<name>.pointwise.txt) or a template file of one's own with {conversation} and
    {response} (optional {reference_block})."""
    return _load(rubric, POINTWISE, ".pointwise.txt")


def pointwise_rubric_for(rubric: str | Path | Rubric) -> Rubric:
    """The pointwise counterpart of a pairwise rubric: built-ins have one of the same name;
    a rubric of one's own needs its pointwise template named explicitly."""
    name = rubric.name if isinstance(rubric, Rubric) else str(rubric)
    if name not in BUILTIN_RUBRICS:
        raise InputError(
            f"rubric {name!r} has no built-in pointwise version: give a pointwise template "
            "(--pointwise-rubric FILE with {conversation} and {response})"
        )
    return load_pointwise_rubric(name)
