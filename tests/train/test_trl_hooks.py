"""The TRL internals prefdata overrides or reads still exist with the shapes it expects, so a TRL
upgrade fails here, loudly, instead of training wrongly."""

from __future__ import annotations

import inspect

import pytest

from prefdata.train.trl_hooks import HOOKS, Hook, check_trl_hooks, hook_problems

trl = pytest.importorskip("trl")


def test_every_hook_matches_the_installed_trl() -> None:
    assert hook_problems() == []
    check_trl_hooks()  # no error


def test_a_changed_hook_is_named() -> None:
    wrong = (
        Hook("trl:DPOTrainer.compute_ref_log_probs", ("self", "model", "batch")),
        Hook("trl:GRPOTrainer._no_such_hook"),
        Hook("trl:GRPOTrainer.__init__", None, fragments=("self._no_such_attribute =",)),
    )
    problems = hook_problems(wrong)
    assert len(problems) == 3
    assert "compute_ref_log_probs takes" in problems[0] and "'inputs'" in problems[0]
    assert "_no_such_hook is gone" in problems[1]
    assert "self._no_such_attribute" in problems[2]


def _trl_overrides(cls: type) -> set[str]:
    """`Base.name` for every attribute `cls` defines that a TRL base class also defines."""
    found = set()
    for name, value in vars(cls).items():
        if not callable(value) or (name.startswith("__") and name != "__init__"):
            continue
        for base in cls.__mro__[1:]:
            if base.__module__.startswith("trl.") and name in vars(base):
                found.add(f"{base.__name__}.{name}")
                break
    return found


def test_every_override_of_a_trl_method_is_listed() -> None:
    from prefdata.train.dpo import weighted_trainer_class
    from prefdata.train.grpo import online_trainer_class

    listed = {h.target.split(":")[1] for h in HOOKS}
    overridden = (
        _trl_overrides(weighted_trainer_class())
        | _trl_overrides(online_trainer_class("GRPOTrainer"))
        | _trl_overrides(online_trainer_class("RLOOTrainer"))
    )
    # Public Trainer methods (compute_loss, log) are listed too when prefdata overrides them
    # on a TRL class; __init__ only passes its arguments through.
    overridden.discard("DPOTrainer.__init__")
    assert overridden, "no overrides found: the check itself is broken"
    assert overridden <= listed, overridden - listed


def test_overridden_methods_keep_the_signature_of_what_they_override() -> None:
    from prefdata.train.dpo import weighted_trainer_class

    cls = weighted_trainer_class()
    for name in ("compute_loss", "compute_ref_log_probs", "log"):
        ours = list(inspect.signature(vars(cls)[name]).parameters)
        theirs = list(inspect.signature(getattr(trl.DPOTrainer, name)).parameters)
        assert ours == theirs, name
