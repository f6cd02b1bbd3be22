"""Pipeline files: parse and check them before anything runs.

    pipeline = load_pipeline("demo.yaml", profile="quick", sets=["judge.judges=[anthropic:x]"])

The file (YAML):

    name: my-run                    # optional
    description: what it does       # optional
    cache: calls.sqlite             # the call cache, inside the run folder (this is the default)
    profiles:                       # optional named option changes, chosen with --profile
      quick:
        generate: {n: 2}            # stage name -> options (mappings merge, the rest replaces)
    stages:
      - kind: generate              # a stage kind: prefdata.pipeline.stages.REGISTRY
        name: candidates            # optional, default the kind; the stage's output folder
        inputs:                     # optional: where a slot comes from, when not the default
          prompts: prompts.jsonl    #   a file (relative to this file), or an earlier stage's
                                    #   name, or stage.output (e.g. consensus.pairs)
        n: 4                        # the kind's own options

A slot not named in `inputs` comes from the latest earlier stage that made a table of that
name (e.g. `pairs`); file options (`path`, `recipe`, `guidelines`, a `rubric` that is not a
built-in name, ...) are relative to the pipeline file, and `${VAR}` in them is read from the
environment; a file an option names is hashed like an input, so editing it re-runs the stage.
`--set stage.key=value` (value in YAML syntax; `stage.key.sub=value` reaches into a mapping)
changes one option, and a relative file given there is relative to the current folder.

Every error is an InputError naming the file, the stage (number, name, line) and the key:
an unknown stage kind or option (with the closest known name), a wrong type, a missing
required option, an input no earlier stage can make, a file that does not exist.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefdata.errors import InputError
from prefdata.pipeline.kinds import Slot, StageKind
from prefdata.pipeline.rounds import expand
from prefdata.pipeline.stages import REGISTRY

TOP_KEYS = ("name", "description", "cache", "profiles", "rounds", "rounds_from", "stages")
STAGE_KEYS = ("kind", "name", "inputs")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class StageRef:
    """An input taken from a named earlier stage: its first output among `names`."""

    stage: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class StageSpec:
    """One checked stage: options with defaults filled in (files made absolute), and the
    inputs the file names explicitly (slot -> an earlier stage reference or a file)."""

    index: int
    name: str
    kind: str
    options: dict[str, Any]
    inputs: dict[str, StageRef | Path] = field(default_factory=dict)
    line: int | None = None
    # Iterative rounds (prefdata.pipeline.rounds): the round of a loop stage (0: not in the
    # loop) and its name in the file.
    round: int = 0
    loop_name: str | None = None

    @property
    def where(self) -> str:
        """ "stage 3 'judge'": how errors name this stage."""
        return f"stage {self.index} '{self.name}'"

    @property
    def definition(self) -> StageKind:
        return REGISTRY[self.kind]

    def slots(self) -> tuple[Slot, ...]:
        return self.definition.slots(self.options)


@dataclass(frozen=True)
class Pipeline:
    """A checked pipeline file."""

    path: Path
    name: str
    description: str | None
    cache: str
    stages: tuple[StageSpec, ...]
    rounds: int = 1

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


# ---- YAML with line numbers --------------------------------------------------------------


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int | None = None
    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    out = _Mapping()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line(mapping: Any, key: Any = None) -> int | None:
    if isinstance(mapping, _Mapping):
        return mapping.lines.get(key, mapping.line) if key is not None else mapping.line
    return None


def _read_yaml(path: Path) -> Any:
    from prefdata.io.tables import read_text

    try:
        # _Loader is a SafeLoader: no arbitrary Python objects.
        return yaml.load(read_text(path), Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark else ""
        raise InputError(
            f"{line}not valid YAML: {exc.problem or exc.context}", source=path
        ) from None


# ---- helpers -----------------------------------------------------------------------------


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"


def _merge(base: Any, change: Any) -> Any:
    """`change` over `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(change, Mapping):
        out = copy.copy(base) if isinstance(base, _Mapping) else dict(base)
        for key, value in change.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return change


def expand_path(value: str, base: Path) -> Path:
    """A file option: `${VAR}` from the environment, `~`, relative to `base`."""

    def var(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise InputError(f"environment variable {name} is not set (in '{value}')")
        return os.environ[name]

    path = Path(_VAR.sub(var, value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def parse_set(item: str) -> tuple[list[str], Any]:
    """'stage.key=value' -> (["stage", "key"], value parsed as YAML)."""
    target, sep, raw = item.partition("=")
    keys = target.strip().split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise InputError(f"--set expects stage.key=value, got '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return keys, value


# ---- the checks --------------------------------------------------------------------------


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def error(self, message: str, where: str | None = None, line: int | None = None) -> InputError:
        at = f"line {line}" if line else ""
        prefix = f"{where} ({at}): " if where and at else f"{where or at}: " if where or at else ""
        return InputError(f"{prefix}{message}", source=self.path)

    def top(self, doc: Any) -> Mapping[str, Any]:
        if not isinstance(doc, Mapping):
            raise self.error("a pipeline file is a mapping with a `stages:` list")
        for key in doc:
            if key not in TOP_KEYS:
                raise self.error(
                    f"unknown key '{key}'{_suggest(str(key), TOP_KEYS)}", line=_line(doc, key)
                )
        stages = doc.get("stages")
        if not isinstance(stages, list) or not stages:
            raise self.error(
                "`stages:` must be a non-empty list of stages", line=_line(doc, "stages")
            )
        return doc

    def names(self, stages: list[Any]) -> list[str]:
        names: list[str] = []
        for i, entry in enumerate(stages, start=1):
            where = f"stage {i}"
            if not isinstance(entry, Mapping):
                raise self.error(
                    "must be a mapping with `kind:` and the stage's options", where, _line(entry)
                )
            kind = entry.get("kind")
            if kind is None:
                raise self.error("`kind:` is missing (the stage kind)", where, _line(entry))
            if kind not in REGISTRY:
                raise self.error(
                    f"unknown stage kind '{kind}'{_suggest(str(kind), list(REGISTRY))}",
                    where,
                    _line(entry, "kind"),
                )
            name = entry.get("name", kind)
            if not isinstance(name, str) or not _NAME.match(name):
                raise self.error(
                    f"name {name!r} must be letters, digits, '-', '_' or '.' (a folder name)",
                    where,
                    _line(entry, "name"),
                )
            if name in names:
                raise self.error(
                    f"two stages are named '{name}'; give this one its own `name:`",
                    where,
                    _line(entry),
                )
            names.append(name)
        return names

    def options(
        self, entry: Mapping[str, Any], kind: StageKind, where: str, cli_keys: set[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in entry:
            if key in STAGE_KEYS:
                continue
            if key not in kind.options:
                known = list(kind.options) + list(STAGE_KEYS)
                raise self.error(
                    f"key '{key}': unknown option for a {kind.kind} stage"
                    f"{_suggest(str(key), known)}",
                    where,
                    _line(entry, key),
                )
        for key, opt in kind.options.items():
            value = copy.deepcopy(entry.get(key, opt.default))
            try:
                value = opt.check(value)
                if opt.names_file(value):
                    base = Path.cwd() if key in cli_keys else self.base
                    resolved = expand_path(value, base)
                    if not resolved.exists():
                        names = f"not a built-in ({', '.join(opt.names)}) and " if opt.names else ""
                        raise InputError(f"{names}file not found: {resolved}")
                    value = str(resolved)
            except ValueError as exc:
                raise self.error(f"key '{key}': {exc}", where, _line(entry, key)) from None
            out[key] = _plain(value)
        if kind.check is not None:
            try:
                kind.check(out)
            except ValueError as exc:
                raise self.error(f"key {exc}", where, _line(entry)) from None
        return out

    def inputs(
        self,
        entry: Mapping[str, Any],
        spec: StageSpec,
        earlier: Sequence[StageSpec],
        every: Sequence[str],
        cli_keys: set[str],
    ) -> dict[str, StageRef | Path]:
        given = entry.get("inputs") or {}
        line = _line(entry, "inputs")
        if not isinstance(given, Mapping):
            raise self.error("`inputs:` must map slot names to stages or files", spec.where, line)
        slots = {s.key: s for s in spec.slots()}
        by_name = {s.name: s for s in earlier}
        out: dict[str, StageRef | Path] = {}
        for key, value in given.items():
            where = f"{spec.where}, inputs.{key}"
            if key not in slots:
                raise self.error(
                    f"unknown input for a {spec.kind} stage{_suggest(str(key), list(slots))}",
                    where,
                    _line(given, key),
                )
            if not isinstance(value, str):
                raise self.error("must be a stage name or a file", where, _line(given, key))
            head, _, tail = value.partition(".")
            if value in by_name or (head in by_name and tail in by_name[head].definition.outputs):
                stage = by_name[value] if value in by_name else by_name[head]
                wanted = (tail,) if value not in by_name else slots[key].names
                if not set(wanted) & set(stage.definition.outputs):
                    raise self.error(
                        f"stage '{stage.name}' makes no {' or '.join(wanted)}",
                        where,
                        _line(given, key),
                    )
                out[key] = StageRef(stage.name, tuple(wanted))
            elif value in every or head in every:
                raise self.error(
                    f"stage '{head}' comes later; an input must come from an earlier stage",
                    where,
                    _line(given, key),
                )
            else:
                try:
                    base = Path.cwd() if f"inputs.{key}" in cli_keys else self.base
                    path = expand_path(value, base)
                except ValueError as exc:
                    raise self.error(str(exc), where, _line(given, key)) from None
                if not path.exists():
                    raise self.error(f"file not found: {path}", where, _line(given, key))
                out[key] = path
        for slot in slots.values():
            if slot.key in out or not slot.required:
                continue
            if not any(set(slot.names) & set(s.definition.outputs) for s in earlier):
                makers = sorted(k for k, d in REGISTRY.items() if set(slot.names) & set(d.outputs))
                raise self.error(
                    f"needs {' or '.join(slot.names)}, which no earlier stage makes (stages "
                    f"that make it: {', '.join(makers) or 'none'}); add one before it, or "
                    f"name a file with `inputs: {{{slot.key}: FILE}}`",
                    spec.where,
                    spec.line,
                )
        return out


def _plain(value: Any) -> Any:
    """Plain dicts and lists (no line-number mappings) for hashing and JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _apply_changes(
    stages: list[Any], names: list[str], changes: Mapping[str, Any], what: str
) -> dict[str, set[str]]:
    """Merge `changes` (stage name -> options) into the stage entries; returns which keys
    each stage got this way."""
    touched: dict[str, set[str]] = {}
    for stage_name, opts in changes.items():
        if stage_name not in names:
            raise InputError(
                f"{what}: no stage named '{stage_name}'{_suggest(str(stage_name), names)}"
            )
        if not isinstance(opts, Mapping):
            raise InputError(f"{what}: '{stage_name}' must map option names to values")
        i = names.index(stage_name)
        stages[i] = _merge(stages[i], opts)
        touched.setdefault(stage_name, set()).update(str(k) for k in opts)
    return touched


def load_pipeline(
    path: str | Path, *, sets: Sequence[str] = (), profile: str | None = None
) -> Pipeline:
    """Read and check a pipeline file; `profile` and `sets` change options first (the
    profile, then each --set in order). Raises InputError naming the file, stage and key."""
    path = Path(path).resolve()
    checker = _Checker(path)
    doc = checker.top(_read_yaml(path))
    stages: list[Any] = list(doc["stages"])
    names = checker.names(stages)
    if profile is not None:
        profiles = doc.get("profiles") or {}
        if profile not in profiles:
            raise checker.error(
                f"no profile '{profile}' (profiles: {', '.join(profiles) or 'none'})",
                line=_line(doc, "profiles"),
            )
        _apply_changes(stages, names, profiles[profile], f"profile '{profile}'")
    cli_keys: dict[str, set[str]] = {}
    for item in sets:
        keys, value = parse_set(item)
        change: Any = value
        for key in reversed(keys[1:]):
            change = {key: change}
        for name, touched in _apply_changes(
            stages, names, {keys[0]: change}, f"--set {item}"
        ).items():
            cli_keys.setdefault(name, set()).update(touched)
            if "inputs" in touched:
                cli_keys[name].update(f"inputs.{k}" for k in change.get("inputs", {}))
    specs: list[StageSpec] = []
    for i, (entry, name) in enumerate(zip(stages, names, strict=True), start=1):
        kind = REGISTRY[entry["kind"]]
        line = _line(entry)
        where = f"stage {i} '{name}'"
        options = checker.options(entry, kind, where, cli_keys.get(name, set()))
        spec = StageSpec(i, name, kind.kind, options, {}, line)
        inputs = checker.inputs(entry, spec, specs, names, cli_keys.get(name, set()))
        specs.append(StageSpec(i, name, kind.kind, options, inputs, line))
    cache = doc.get("cache", "calls.sqlite")
    if not isinstance(cache, str) or Path(cache).is_absolute() or ".." in Path(cache).parts:
        raise checker.error(
            "`cache:` must be a file name inside the run folder", line=_line(doc, "cache")
        )
    rounds = doc.get("rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise checker.error("`rounds:` must be a whole number >= 1", line=_line(doc, "rounds"))
    start = doc.get("rounds_from")
    try:
        expanded = expand(tuple(specs), rounds, None if start is None else str(start))
    except InputError as exc:
        raise checker.error(exc.detail, line=_line(doc, "rounds")) from None
    return Pipeline(
        path=path,
        name=str(doc.get("name") or path.stem),
        description=doc.get("description"),
        cache=cache,
        stages=expanded,
        rounds=rounds,
    )
