"""A reward-hacking monitor for on-policy RL (GRPO now, RLOO later): warn, or stop training,
when the policy drifts the way reward hacking looks.

Five signals, each read from what the trainer already logs or measures, watched together:

- **length drift**: the mean completion length (TRL's `completions/mean_length`) against its
  mean over the first `baseline_steps` logged steps. A policy that learns the reward likes long
  (or empty) answers changes length long before anything else shows it. Ratio = current /
  baseline (current: the mean of the last `window` logs); it counts when the ratio, or its
  inverse for shrinking answers (infinite for empty ones), exceeds `length_warn` /
  `length_stop`.
- **length at the cap**: when completions already sit at `max_completion_length` (TRL's
  `completions/clipped_ratio`, the share cut at the cap, at or above `clipped_warn`), the
  length cannot drift any more, so the drift signal is blind exactly when length hacking has
  won. Then a rising training reward (its mean of the last `window` logs above its baseline)
  is the alert: the reward is being bought with length the cap hides.
- **KL to the reference** (TRL's `kl`, the mean per-token KL of the policy to the reference;
  logged only when `beta` > 0): the distance the policy has travelled. Over `kl_warn` /
  `kl_stop` (nats per token, mean of the last `window` logs).
- **no learning signal**: the share of completions whose advantage is zero
  (`advantages/frac_zero`, logged by prefdata's GRPO / RLOO trainers: every completion of a
  group got the same reward, e.g. 0 everywhere) at or above `no_signal_warn`. Nothing is
  learned from such a batch.
- **reward vs a held-out judge** (optional): every `judge_every` steps, greedy completions for
  a few held-out prompts are scored by an independent reward function (`judge`: an entry like
  those of prefdata.rewards, e.g. an LLM judge or the accuracy on held-out questions). When
  the training reward has risen above its baseline while the held-out score has fallen by
  `judge_drop_warn` / `judge_drop_stop` or more below its own first value, the policy is
  getting better at the reward and worse at the task.

With the defaults (baseline from the first logged step, a window of 2) the first check runs at
the second logged step.
A threshold must be exceeded on `patience` consecutive logs (held-out checks: once) before it
counts, so one noisy step raises nothing. A warning is logged once per signal (and again only
when it clears and returns). A stop sets `control.should_training_stop` unless `stop: false`;
the trainer then ends the step cleanly and the model is saved as usual. Thresholds are
heuristics: the defaults are loose enough that a flat run raises nothing; tune them per task.

The summary (baselines, last and extreme values, every alert, whether and why training
stopped) goes into the training report under `monitor`.

Several processes: the logged metrics are gathered over processes by TRL, so every process
sees the same values and takes the same stop decision. The held-out check generates with the
model as each process holds it (greedy, so the same text everywhere): fine for one GPU or DDP;
under DeepSpeed ZeRO-3 / FSDP the weights are sharded, so leave `judge_every` at 0 there.

`RewardHackingMonitor` is plain Python (feed it log dicts); `monitor_callback` wraps it in a
transformers TrainerCallback that also runs the held-out judge.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prefdata.train.recipe import RecipeError

__all__ = [
    "MONITOR_DEFAULTS",
    "Alert",
    "RewardHackingMonitor",
    "monitor_callback",
    "monitor_settings",
]

log = logging.getLogger(__name__)

MONITOR_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    # Logged steps whose mean is each signal's baseline, and how many the current value averages
    # (1 and 2: the first check runs at the second logged step).
    "baseline_steps": 1,
    "window": 2,
    # Consecutive logs over a threshold before it counts.
    "patience": 2,
    # Mean completion length / its baseline (or the inverse when answers shrink).
    "length_warn": 1.5,
    "length_stop": 3.0,
    # Mean per-token KL to the reference, in nats (TRL logs it when beta > 0).
    "kl_warn": 0.2,
    "kl_stop": 1.0,
    # Share of completions cut at max_completion_length at or above which a rising reward
    # is an alert (the length cannot drift further; null: off).
    "clipped_warn": 0.9,
    # Share of completions with a zero advantage (no learning signal) at or above which to warn
    # (null: off).
    "no_signal_warn": 0.99,
    # Held-out judge: a reward spec ({name, options}), run every `judge_every` steps on
    # `judge_prompts` held-out prompts (0: off); drops are in the judge's own units.
    "judge": None,
    "judge_every": 0,
    "judge_prompts": 8,
    "judge_drop_warn": 0.1,
    "judge_drop_stop": None,
    "judge_max_new_tokens": None,  # default: the trainer's max_completion_length
    # false: never stop training, only warn.
    "stop": True,
    # The names of the logged metrics (TRL's GRPO and RLOO names by default).
    "length_key": "completions/mean_length",
    "kl_key": "kl",
    "reward_key": "reward",
    "clipped_key": "completions/clipped_ratio",
    "no_signal_key": "advantages/frac_zero",
}
_NULLABLE = {
    "length_stop",
    "kl_stop",
    "judge_drop_stop",
    "judge_max_new_tokens",
    "clipped_warn",
    "no_signal_warn",
}
_BOOLS = {"enabled", "stop"}
_STRINGS = {"length_key", "kl_key", "reward_key", "clipped_key", "no_signal_key"}


def monitor_settings(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """MONITOR_DEFAULTS updated with a recipe's `prefdata.monitor` mapping, checked.

    Raises RecipeError naming the key for an unknown key or a value of the wrong kind.
    """
    given = dict(given or {})
    unknown = [k for k in given if k not in MONITOR_DEFAULTS]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(MONITOR_DEFAULTS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RecipeError(
            f"unknown monitor key '{unknown[0]}'{hint}", column=f"prefdata.monitor.{unknown[0]}"
        )
    out = {**MONITOR_DEFAULTS, **given}
    for key, value in out.items():
        if key in _BOOLS:
            ok = isinstance(value, bool)
        elif key in _STRINGS:
            ok = isinstance(value, str) and bool(value)
        elif key == "judge":
            ok = value is None or isinstance(value, Mapping | str)
        else:
            ok = (value is None and key in _NULLABLE) or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            )
        if not ok:
            raise RecipeError(
                f"prefdata.monitor.{key}: unexpected value {value!r}",
                column=f"prefdata.monitor.{key}",
            )
    for key in ("baseline_steps", "window", "patience"):
        if int(out[key]) < 1:
            raise RecipeError(f"prefdata.monitor.{key} must be at least 1")
    for warn, stop in (("length_warn", "length_stop"), ("kl_warn", "kl_stop")):
        if out[stop] is not None and out[stop] < out[warn]:
            raise RecipeError(f"prefdata.monitor.{stop} must not be below {warn}")
    if out["length_warn"] <= 1.0:
        raise RecipeError("prefdata.monitor.length_warn is a ratio above 1 (e.g. 1.5)")
    if out["judge_every"] and out["judge"] is None:
        raise RecipeError(
            "prefdata.monitor.judge_every needs prefdata.monitor.judge (a reward spec such as "
            "{name: judge, options: {judge: 'local:smollm2'}})"
        )
    return out


@dataclass(frozen=True)
class Alert:
    """One threshold crossed: signal ("length", "length_cap", "kl", "no_signal", "judge"),
    level ("warn" / "stop")."""

    step: int
    signal: str
    level: str
    value: float
    threshold: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Signal:
    """The history of one logged value and its over-threshold streak per level."""

    values: list[tuple[int, float]] = field(default_factory=list)
    streak: dict[str, int] = field(default_factory=lambda: {"warn": 0, "stop": 0})
    raised: set[str] = field(default_factory=set)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _length_ratio(now: float, base: float) -> float:
    """How far a mean length has moved from its baseline (> 0), either way; inf at length 0."""
    return max(now / base, base / now) if now > 0 else math.inf


class RewardHackingMonitor:
    """Feed it the trainer's logs (`observe`) and held-out scores (`observe_judge`); it returns
    the alerts each one raises, and `summary()` describes the run (see the module doc)."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = monitor_settings(settings)
        self.signals: dict[str, _Signal] = {
            name: _Signal() for name in ("length", "length_cap", "kl", "no_signal")
        }
        self.rewards: list[tuple[int, float]] = []
        self.judge_scores: list[tuple[int, float, float | None]] = []
        self.alerts: list[Alert] = []
        self.stop_reason: str | None = None

    # ---- baselines -------------------------------------------------------------------

    def _baseline(self, values: Sequence[tuple[int, float]]) -> float | None:
        n = int(self.settings["baseline_steps"])
        if len(values) < n:
            return None
        return statistics.fmean(v for _, v in values[:n])

    def _current(self, values: Sequence[tuple[int, float]]) -> float | None:
        if len(values) <= int(self.settings["baseline_steps"]):
            return None  # nothing after the baseline yet
        return self._recent(values)

    def _recent(self, values: Sequence[tuple[int, float]]) -> float:
        """The mean of the last `window` values."""
        return statistics.fmean(v for _, v in values[-int(self.settings["window"]) :])

    def _track(
        self, name: str, key: str, step: int, logs: Mapping[str, Any]
    ) -> list[tuple[int, float]] | None:
        """Signal `name`'s values after adding this log's figure (the setting `key` names it);
        None when the log has no finite figure there (the signal is left as it was)."""
        value = _finite(logs.get(self.settings[key]))
        if value is None:
            return None
        values = self.signals[name].values
        values.append((step, value))
        return values

    def reward_gain(self) -> float | None:
        """Training reward now (mean of the last `window` logs) minus its baseline."""
        base, now = self._baseline(self.rewards), self._current(self.rewards)
        return None if base is None or now is None else now - base

    # ---- checks ----------------------------------------------------------------------

    def _check(
        self, name: str, step: int, value: float, limits: Mapping[str, float | None], text: str
    ) -> list[Alert]:
        signal = self.signals[name]
        out: list[Alert] = []
        patience = int(self.settings["patience"])
        for level in ("warn", "stop"):
            limit = limits.get(level)
            over = limit is not None and value > limit
            signal.streak[level] = signal.streak[level] + 1 if over else 0
            if not over:
                signal.raised.discard(level)
                continue
            assert limit is not None
            if signal.streak[level] >= patience and level not in signal.raised:
                signal.raised.add(level)
                out.append(
                    Alert(step, name, level, value, limit, text.format(value=value, limit=limit))
                )
        return out

    def observe(self, step: int, logs: Mapping[str, Any]) -> list[Alert]:
        """Read one log entry (TRL's metrics for a logged step); return new alerts."""
        alerts: list[Alert] = []
        s = self.settings
        reward = _finite(logs.get(s["reward_key"]))
        if reward is not None:
            self.rewards.append((step, reward))
        lengths = self._track("length", "length_key", step, logs)
        if lengths is not None:
            base, now = self._baseline(lengths), self._current(lengths)
            if base is not None and now is not None and base > 0:
                # Answers collapsing to nothing are the extreme of shrinking: an infinite ratio.
                ratio = _length_ratio(now, base)
                way = "grown" if now >= base else "shrunk"
                how = f"{way} {{value:.2f}}x" if now > 0 else "collapsed to 0 tokens"
                alerts += self._check(
                    "length",
                    step,
                    ratio,
                    {"warn": s["length_warn"], "stop": s["length_stop"]},
                    f"completion length has {how} (mean {now:.1f} tokens against "
                    f"{base:.1f} at the start; limit {{limit:g}}x): the policy may be exploiting "
                    "a length preference of the reward",
                )
        kls = self._track("kl", "kl_key", step, logs)
        if kls is not None:
            alerts += self._check(
                "kl",
                step,
                self._recent(kls),
                {"warn": s["kl_warn"], "stop": s["kl_stop"]},
                "KL to the reference is {value:.3g} nats per token (limit {limit:g}): the policy "
                "has moved far from the reference; raise beta or lower the learning rate",
            )
        alerts += self._check_cap(step, logs)
        alerts += self._check_no_signal(step, logs)
        return self._record(alerts)

    def _check_cap(self, step: int, logs: Mapping[str, Any]) -> list[Alert]:
        """The reward rising while (nearly) every completion is cut at the length cap."""
        clipped = self._track("length_cap", "clipped_key", step, logs)
        limit = self.settings["clipped_warn"]
        gain = self.reward_gain()
        if clipped is None or limit is None or gain is None:
            return []
        share = self._recent(clipped)
        # The alert's value is the reward gain; it counts only while the share sits at the cap.
        at_cap = share >= float(limit)
        return self._check(
            "length_cap",
            step,
            gain if at_cap else 0.0,
            {"warn": 0.0},
            f"the reward rose by {{value:.3g}} while {share:.0%} of completions were cut at "
            "max_completion_length: the length cannot grow further, so the length check is "
            "blind; the reward may be paying for length (raise max_completion_length to see, "
            "or penalise length)",
        )

    def _check_no_signal(self, step: int, logs: Mapping[str, Any]) -> list[Alert]:
        """Every (or nearly every) completion's advantage is zero: nothing to learn from."""
        no_signal = self._track("no_signal", "no_signal_key", step, logs)
        limit = self.settings["no_signal_warn"]
        if no_signal is None or limit is None:
            return []
        share = self._recent(no_signal)
        # _check counts values strictly above the limit; "at or above" is the contract here.
        return self._check(
            "no_signal",
            step,
            share,
            {"warn": float(limit) - 1e-12},
            "{value:.0%} of completions have a zero advantage: every completion of a group got "
            "the same reward (all 0? check the reward functions and the data's answers), so "
            "training learns nothing",
        )

    def observe_judge(self, step: int, score: float) -> list[Alert]:
        """Read one held-out judge score (the mean over the held-out prompts)."""
        gain = self.reward_gain()
        self.judge_scores.append((step, float(score), gain))
        if len(self.judge_scores) < 2 or gain is None or gain <= 0:
            return []
        first = self.judge_scores[0][1]
        drop = first - float(score)
        alerts: list[Alert] = []
        for level, key in (("warn", "judge_drop_warn"), ("stop", "judge_drop_stop")):
            limit = self.settings[key]
            if limit is None or drop < limit:
                continue
            if any(a.signal == "judge" and a.level == level for a in self.alerts):
                continue
            alerts.append(
                Alert(
                    step,
                    "judge",
                    level,
                    drop,
                    float(limit),
                    f"the training reward rose by {gain:.3g} while the held-out judge score fell "
                    f"by {drop:.3g} (from {first:.3g} to {score:.3g}; limit {limit:g}): the "
                    "policy is getting better at the reward, not at the task",
                )
            )
        return self._record(alerts)

    def _record(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.alerts.append(alert)
            if alert.level == "stop" and self.settings["stop"] and self.stop_reason is None:
                self.stop_reason = alert.message
        return alerts

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    # ---- summary ---------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Baselines, last and extreme values per signal, alerts and the stop decision."""
        checks: dict[str, Any] = {}
        length = self.signals["length"].values
        if length:
            base = self._baseline(length)
            values = [v for _, v in length]
            checks["length"] = {
                "baseline": base,
                "last": values[-1],
                "min": min(values),
                "max": max(values),
                "max_ratio": None if not base else max(_length_ratio(v, base) for v in values),
            }
        kl = self.signals["kl"].values
        checks["kl"] = (
            {"last": kl[-1][1], "max": max(v for _, v in kl)}
            if kl
            else {"note": "no `kl` logged (beta = 0: no reference, no KL term)"}
        )
        for name in ("length_cap", "no_signal"):
            values = [v for _, v in self.signals[name].values]
            if values:
                key = "clipped_share" if name == "length_cap" else "zero_advantage_share"
                checks[key] = {
                    "last": values[-1],
                    "max": max(values),
                    "mean": statistics.fmean(values),
                }
        if self.rewards:
            checks["reward"] = {
                "baseline": self._baseline(self.rewards),
                "last": self.rewards[-1][1],
                "gain": self.reward_gain(),
            }
        if self.judge_scores:
            checks["judge"] = {
                "scores": [{"step": s, "score": v} for s, v, _ in self.judge_scores],
                "first": self.judge_scores[0][1],
                "last": self.judge_scores[-1][1],
            }
        levels = {a.level for a in self.alerts}
        status = "stopped" if self.should_stop else "warn" if levels else "ok"
        return {
            "status": status,
            "stopped": self.should_stop,
            "stop_reason": self.stop_reason,
            "alerts": [a.as_dict() for a in self.alerts],
            "checks": checks,
            "settings": dict(self.settings),
        }


# ---- the trainer callback ---------------------------------------------------------------

Scorer = Callable[..., list[float | None]]


def heldout_score(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    scorer: Scorer,
    *,
    max_new_tokens: int,
) -> float | None:
    """Greedy completions of `rows` (each a dict with `prompt` messages and any columns the
    scorer reads, e.g. `answer`) scored by `scorer`; the mean of the scores it gives."""
    from prefdata.models import generate_text

    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        texts = [
            generate_text(model, tokenizer, list(r["prompt"]), max_new_tokens=max_new_tokens)
            for r in rows
        ]
    finally:
        if was_training:
            model.train()
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"} if rows else {}
    scores = scorer(
        prompts=[r["prompt"] for r in rows],
        completions=[[{"role": "assistant", "content": t}] for t in texts],
        **columns,
    )
    kept = [s for s in scores if s is not None and math.isfinite(s)]
    return statistics.fmean(kept) if kept else None


def monitor_callback(
    monitor: RewardHackingMonitor,
    *,
    report: dict[str, Any] | None = None,
    heldout: Sequence[Mapping[str, Any]] = (),
    scorer: Scorer | None = None,
) -> Any:
    """A transformers TrainerCallback running `monitor` on the trainer's logs.

    With `heldout` rows and a `scorer`, it also scores greedy completions of those prompts
    at the start and every `judge_every` steps. The summary is written into `report["monitor"]`
    when training ends.
    """
    from transformers import TrainerCallback

    settings = monitor.settings

    class RewardHackingCallback(TrainerCallback):
        def __init__(self) -> None:
            self.monitor = monitor

        def _act(self, alerts: list[Alert], control: Any) -> None:
            for alert in alerts:
                log.warning("reward-hacking monitor (step %d): %s", alert.step, alert.message)
            if monitor.should_stop:
                control.should_training_stop = True

        def _judge(self, state: Any, args: Any, control: Any, **kwargs: Any) -> None:
            if scorer is None or not heldout:
                return
            limit = settings["judge_max_new_tokens"] or getattr(args, "max_completion_length", 64)
            score = heldout_score(
                kwargs["model"],
                kwargs["processing_class"],
                heldout,
                scorer,
                max_new_tokens=int(limit or 64),
            )
            if score is not None:
                self._act(monitor.observe_judge(int(state.global_step), score), control)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if settings["judge_every"]:
                self._judge(state, args, control, **kwargs)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs and "loss" in logs:
                self._act(monitor.observe(int(state.global_step), logs), control)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            every = int(settings["judge_every"])
            if every and state.global_step % every == 0:
                self._judge(state, args, control, **kwargs)
            if monitor.should_stop:
                control.should_training_stop = True

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if report is not None:
                report["monitor"] = monitor.summary()
                if monitor.alerts:
                    report.setdefault("warnings", []).extend(
                        f"monitor step {a.step}: {a.message}" for a in monitor.alerts
                    )

    return RewardHackingCallback()
