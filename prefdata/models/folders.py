"""What a model name or folder holds, before anything heavy loads: one answer for every command.

`inspect_model(name)` reads only small JSON files and returns a `ModelFolder`:

- `"smollm2"`: the embedded SmolLM2-135M-Instruct (converted once into the cache);
- a full model folder (`config.json`): a causal LM (a policy) or, when its architecture is a
  sequence classifier with one output, a reward model with its value head;
- a LoRA adapter folder (`adapter_config.json`, what `prefdata train` writes by default): its
  kind from PEFT's `task_type` (`SEQ_CLS`: a reward model), its base from
  `base_model_name_or_path`. A base recorded as another machine's (or another cache's) copy
  of the embedded model is found as this machine's embedded model;
- a `prefdata train rlhf` run folder (`rlhf-summary.json`): its RL policy, or its reward model
  where a reward model is wanted (`want="reward_model"`);
- prefdata's training output folders are one of the above, plus `prefdata-train.json` (the
  method is read from it);
- a hub id (`owner/name`), only where the hub is reachable: its kind is what the caller wants.

`want` names the kind the caller needs; a folder of the other kind gives one line naming both
(`what` says who needs it, e.g. "generate").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdata.errors import InputError, OptionError
from prefdata.models.embedded import EMBEDDED_MODEL, EMBEDDED_MODEL_ID, embedded_alias

__all__ = ["KINDS", "ModelFolder", "check_kind", "inspect_model", "looks_like_path"]

KINDS = {
    "causal_lm": "a policy (causal language model)",
    "reward_model": "a reward model (sequence classifier with one output, the value head)",
}
"""The kinds of model a command can need -> how messages name them."""

_RLHF_SUMMARY = "rlhf-summary.json"
_RLHF_PARTS = {"causal_lm": ("rl", "model"), "reward_model": ("reward", "model")}
_TRAIN_REPORT = "prefdata-train.json"


@dataclass(frozen=True)
class ModelFolder:
    """What a model name or folder holds (see the module doc).

    `path`: the folder (or hub id) whose weights load: the model, or the adapter; `base`: the
    model an adapter loads onto (a local folder or hub id); `method`: the prefdata training
    method that wrote it (None for other folders); `given`: what the caller passed."""

    given: str
    path: str
    kind: str
    adapter: bool = False
    base: str | None = None
    method: str | None = None
    embedded: bool = False
    hub: bool = False

    def describe(self) -> str:
        """One line saying what will load, e.g. "LoRA adapter (dpo) at runs/dpo over ..."."""
        if self.embedded:
            return f"the embedded {EMBEDDED_MODEL_ID} ({self.path})"
        what = "reward model" if self.kind == "reward_model" else "policy"
        by = f", trained by prefdata train {self.method}" if self.method else ""
        if self.adapter:
            return f"{what}: LoRA adapter at {self.path}{by}, loaded onto {self.base}"
        source = "hub id" if self.hub else "full weights at"
        return f"{what}: {source} {self.path}{by}"


def looks_like_path(name: str) -> bool:
    """True for names that can only be meant as local paths (hub ids are "name" or "o/name")."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read: {err}", source=path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", source=path)
    return data


def _kind_of_config(config: dict[str, Any], source: Path) -> str:
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        if int(labels) != 1:
            raise InputError(
                f"a sequence classifier with {labels} outputs; a reward model has one "
                "(num_labels=1)",
                source=source,
            )
        return "reward_model"
    return "causal_lm"


def _method(folder: Path) -> str | None:
    report = folder / _TRAIN_REPORT
    if not report.is_file():
        return None
    method = _read_json(report).get("method")
    return str(method) if method else None


def _resolve_base(recorded: str | None, adapter: Path) -> tuple[str, bool, bool]:
    """(base, is it the embedded model, is it a hub id) for an adapter's recorded base."""
    if not recorded:
        raise InputError(
            "a LoRA adapter without a base model (base_model_name_or_path is empty)",
            source=adapter / "adapter_config.json",
        )
    if recorded == EMBEDDED_MODEL or embedded_alias(recorded):
        from prefdata.models.embedded import embedded_model_path

        return str(embedded_model_path()), True, False
    path = Path(recorded).expanduser()
    if not path.is_absolute():
        # PEFT records the path as given; a relative one is relative to where training ran,
        # which is most often where the adapter's own parent folder is.
        beside = (adapter.parent / path).resolve()
        if beside.exists():
            return str(beside), False, False
    if path.exists():
        return str(path.resolve()), False, False
    if looks_like_path(recorded):
        raise InputError(
            f"the adapter's base model {recorded} is not on this machine; copy it here or "
            "merge the adapter where it is (prefdata export-model)",
            source=adapter / "adapter_config.json",
        )
    return recorded, False, True


def _inspect_folder(folder: Path, want: str | None) -> ModelFolder:
    if (folder / _RLHF_SUMMARY).is_file():
        # An rlhf run: the policy, unless a reward model is what the caller needs.
        part = _RLHF_PARTS["reward_model" if want == "reward_model" else "causal_lm"]
        inner = folder.joinpath(*part)
        if not inner.exists():
            raise InputError(f"the rlhf run has no {'/'.join(part)} yet", source=folder)
        return _inspect_folder(inner, want)
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        config = _read_json(adapter_config)
        kind = "reward_model" if config.get("task_type") == "SEQ_CLS" else "causal_lm"
        base, _, _ = _resolve_base(config.get("base_model_name_or_path"), folder)
        return ModelFolder(
            given=str(folder),
            path=str(folder),
            kind=kind,
            adapter=True,
            base=base,
            method=_method(folder),
        )
    config_file = folder / "config.json"
    if config_file.is_file():
        kind = _kind_of_config(_read_json(config_file), config_file)
        return ModelFolder(
            given=str(folder),
            path=str(folder),
            kind=kind,
            method=_method(folder),
            embedded=embedded_alias(str(folder)),
        )
    what = "reward model" if want == "reward_model" else "model"
    raise InputError(
        f"not a {what} folder: config.json is missing (and no adapter_config.json, "
        "rlhf-summary.json)",
        source=folder,
    )


_SHORT = {"causal_lm": "a policy", "reward_model": "a reward model"}


def check_kind(found: ModelFolder, want: str | None, what: str | None) -> ModelFolder:
    """`found` when it is of kind `want` (or `want` is None); else one clear InputError naming
    both kinds."""
    if want is None or found.kind == want:
        return found
    who = what or "this command"
    origin = f", a '{found.method}' training output" if found.method else ""
    raise InputError(
        f"{found.given} holds {KINDS[found.kind]}{origin}, not {_SHORT[want]}: {who} needs "
        f"{KINDS[want]}"
    )


def inspect_model(
    name_or_path: str | Path,
    *,
    want: str | None = None,
    what: str | None = None,
    cache_dir: str | Path | None = None,
) -> ModelFolder:
    """What `name_or_path` holds (see the module doc); InputError for a missing folder, a folder
    that holds no model, or one of another kind than `want` ("causal_lm" / "reward_model",
    None: either), naming `what` needs it."""
    if want is not None and want not in KINDS:
        raise OptionError(f"must be one of {', '.join(KINDS)} or None, got {want!r}", option="want")
    name = str(name_or_path)
    if name == EMBEDDED_MODEL:
        from prefdata.models.embedded import embedded_model_path

        found = ModelFolder(
            given=name,
            path=str(embedded_model_path(cache_dir=cache_dir)),
            kind="causal_lm",
            embedded=True,
        )
        return check_kind(found, want, what)
    path = Path(name).expanduser()
    if not path.exists():
        if looks_like_path(name):
            raise InputError("no such model folder", source=name)
        return ModelFolder(given=name, path=name, kind=want or "causal_lm", hub=True)
    if path.is_file():
        if path.suffix == ".gguf":
            raise InputError(
                "GGUF files other than the embedded model are not loaded directly; pass a folder "
                "with config.json (transformers' from_pretrained(dir, gguf_file=...) then "
                "save_pretrained makes one)",
                source=path,
            )
        raise InputError("a model is a folder, not a file", source=path)
    found = dataclasses.replace(_inspect_folder(path, want), given=name)
    return check_kind(found, want, what)
