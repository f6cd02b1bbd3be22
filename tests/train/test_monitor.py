"""The reward-hacking monitor on log sequences shaped like real GRPO runs: drift raises the
right alert at the right step, a flat noisy run raises nothing, and the TrainerCallback stops
training through transformers' own TrainerControl. (The monitor in a real GRPO run: see
test_grpo.py.)"""

from __future__ import annotations

import random
from typing import Any

import pytest

from prefdata.train.monitor import (
    MONITOR_DEFAULTS,
    RewardHackingMonitor,
    monitor_callback,
    monitor_settings,
)
from prefdata.train.recipe import RecipeError


def _logs(
    steps: int,
    *,
    length: Any = lambda s: 120.0,
    kl: Any = lambda s: 0.02,
    reward: Any = lambda s: 0.3,
    seed: int = 0,
) -> list[dict[str, float]]:
    """TRL-like log entries with multiplicative noise (5% on length, 20% on KL)."""
    rng = random.Random(seed)
    out = []
    for step in range(1, steps + 1):
        out.append(
            {
                "loss": 0.01,
                "completions/mean_length": length(step) * (1 + rng.uniform(-0.05, 0.05)),
                "kl": kl(step) * (1 + rng.uniform(-0.2, 0.2)),
                "reward": reward(step) + rng.uniform(-0.05, 0.05),
            }
        )
    return out


def _run(monitor: RewardHackingMonitor, logs: list[dict[str, float]]) -> int | None:
    """Feed the logs; the step training would stop at (None: it runs to the end)."""
    for step, entry in enumerate(logs, start=1):
        monitor.observe(step, entry)
        if monitor.should_stop:
            return step
    return None


@pytest.mark.parametrize("seed", range(5))
def test_a_flat_noisy_run_raises_nothing(seed: int) -> None:
    monitor = RewardHackingMonitor()
    # Reward improving slowly, length and KL flat with noise: a healthy run.
    logs = _logs(200, reward=lambda s: 0.2 + 0.002 * s, seed=seed)
    assert _run(monitor, logs) is None
    summary = monitor.summary()
    assert summary["status"] == "ok" and summary["alerts"] == []
    assert summary["checks"]["length"]["baseline"] == pytest.approx(120, rel=0.05)
    assert summary["checks"]["length"]["max_ratio"] < 1.2
    assert summary["checks"]["reward"]["gain"] == pytest.approx(0.4, abs=0.06)


def test_growing_completions_warn_then_stop() -> None:
    monitor = RewardHackingMonitor()
    # Length flat for 10 steps, then +10% of the baseline per step (reward goes up with it).
    logs = _logs(100, length=lambda s: 100.0 if s <= 10 else 100.0 + 10.0 * (s - 10))
    stopped = _run(monitor, logs)
    alerts = monitor.alerts
    assert [(a.signal, a.level) for a in alerts] == [("length", "warn"), ("length", "stop")]
    warn, stop = alerts
    # The 3-log window means 1.5x shows about 2 logs late, and patience adds one more.
    assert 15 <= warn.step <= 20 and warn.value > 1.5
    assert stopped == stop.step and 30 <= stop.step <= 36 and stop.value > 3.0
    assert "completion length has grown" in stop.message
    assert monitor.summary()["status"] == "stopped"
    assert monitor.summary()["stop_reason"] == stop.message


def test_collapsing_completions_warn_too() -> None:
    monitor = RewardHackingMonitor({"length_stop": None})
    logs = _logs(60, length=lambda s: 200.0 if s <= 5 else max(20.0, 200.0 - 8.0 * (s - 5)))
    assert _run(monitor, logs) is None  # no stop threshold: warns only
    assert [(a.signal, a.level) for a in monitor.alerts] == [("length", "warn")]
    assert "shrunk" in monitor.alerts[0].message
    assert monitor.summary()["status"] == "warn"


def test_completions_collapsing_to_length_zero_warn_then_stop() -> None:
    monitor = RewardHackingMonitor()
    lengths = [40.0, 40.0, 40.0] + [0.0] * 5
    logs = [{"loss": 0.01, "completions/mean_length": n} for n in lengths]
    # Baseline from the first log, a window of 2, patience 2 (the defaults since the first
    # check moved to step 2): the drop shows at step 4, warns at 5 and stops at 6.
    assert _run(monitor, logs) == 6
    assert [(a.signal, a.level, a.step) for a in monitor.alerts] == [
        ("length", "warn", 5),
        ("length", "stop", 6),
    ]
    assert monitor.alerts[1].value == float("inf")
    assert "collapsed to 0 tokens" in monitor.alerts[1].message
    summary = monitor.summary()
    assert summary["status"] == "stopped"
    assert summary["checks"]["length"]["max_ratio"] == float("inf")


def test_kl_drift_warns_and_stops_unless_told_to_only_warn() -> None:
    drifting = _logs(80, kl=lambda s: 0.02 * 1.08**s)
    monitor = RewardHackingMonitor()
    stopped = _run(monitor, drifting)
    assert [(a.signal, a.level) for a in monitor.alerts] == [("kl", "warn"), ("kl", "stop")]
    assert stopped is not None and monitor.alerts[1].value > 1.0
    assert "raise beta" in monitor.alerts[1].message

    warn_only = RewardHackingMonitor({"stop": False})
    assert _run(warn_only, drifting) is None
    assert [a.level for a in warn_only.alerts] == ["warn", "stop"]
    assert warn_only.summary()["stopped"] is False


def test_one_spike_is_not_a_drift() -> None:
    monitor = RewardHackingMonitor({"window": 1})
    logs = _logs(40)
    logs[20]["completions/mean_length"] = 1000.0  # one odd batch
    logs[21]["kl"] = 5.0
    assert _run(monitor, logs) is None and monitor.alerts == []


def test_held_out_judge_falling_while_reward_rises() -> None:
    monitor = RewardHackingMonitor({"judge": {"name": "judge"}, "judge_every": 10})
    logs = _logs(60, reward=lambda s: 0.2 + 0.01 * s)
    for step, entry in enumerate(logs, start=1):
        monitor.observe(step, entry)
        if step % 10 == 0 or step == 1:
            # The judge liked the first answers (0.6) and likes each later batch less.
            monitor.observe_judge(step, 0.6 - 0.004 * step)
    alerts = [a for a in monitor.alerts if a.signal == "judge"]
    assert [a.level for a in alerts] == ["warn"]  # judge_drop_stop is off by default
    assert alerts[0].step == 30 and alerts[0].value == pytest.approx(0.116)
    assert "better at the reward, not at the task" in alerts[0].message
    judge = monitor.summary()["checks"]["judge"]
    assert judge["first"] == pytest.approx(0.596) and len(judge["scores"]) == 7

    steady = RewardHackingMonitor({"judge": {"name": "judge"}, "judge_every": 10})
    for step, entry in enumerate(logs, start=1):
        steady.observe(step, entry)
        if step % 10 == 0:
            steady.observe_judge(step, 0.6 + 0.001 * step)
    assert steady.alerts == []


def test_settings_are_checked() -> None:
    assert monitor_settings(None) == MONITOR_DEFAULTS
    with pytest.raises(RecipeError, match=r"unknown monitor key 'kl_wran'.*did you mean kl_warn"):
        monitor_settings({"kl_wran": 1})
    with pytest.raises(RecipeError, match="length_stop must not be below length_warn"):
        monitor_settings({"length_stop": 1.2})
    with pytest.raises(RecipeError, match=r"judge_every needs prefdata\.monitor\.judge"):
        monitor_settings({"judge_every": 5})
    with pytest.raises(RecipeError, match="unexpected value"):
        monitor_settings({"patience": "two"})
    with pytest.raises(RecipeError, match="ratio above 1"):
        monitor_settings({"length_warn": 0.5})


def test_callback_stops_training_through_trainer_control() -> None:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    monitor = RewardHackingMonitor({"kl_warn": 0.05, "kl_stop": 0.1, "patience": 1, "window": 1})
    report: dict[str, Any] = {}
    callback = monitor_callback(monitor, report=report)
    assert isinstance(callback, TrainerCallback)
    args = TrainingArguments(output_dir="unused", report_to="none")
    state, control = TrainerState(), TrainerControl()
    for step, kl in enumerate([0.01, 0.02, 0.07, 0.2], start=1):
        state.global_step = step
        callback.on_log(args, state, control, logs={"loss": 0.0, "kl": kl})
        if step < 4:
            assert not control.should_training_stop
    assert control.should_training_stop
    callback.on_train_end(args, state, control)
    assert report["monitor"]["stopped"] and report["monitor"]["alerts"][-1]["step"] == 4
    assert any("KL to the reference" in w for w in report["warnings"])
    # Evaluation logs (no "loss") are not training steps.
    other = RewardHackingMonitor()
    monitor_callback(other).on_log(args, state, TrainerControl(), logs={"eval_kl": 9.0})
    assert other.signals["kl"].values == []


def test_training_report_stays_strict_json_with_infinite_ratios() -> None:
    # A collapsed length gives a ratio of inf; the report must still be standard JSON.
    import json

    from prefdata.train.outputs import jsonable

    report = jsonable({"max_ratio": float("inf"), "values": [float("nan"), 1.5]})
    assert report == {"max_ratio": "inf", "values": [None, 1.5]}
    json.dumps(report, allow_nan=False)
