"""The report's interpretive sentences. Each one reads its figure together with the figure's
95% interval, so a sentence never claims more than the interval allows: a preference is
named only when the whole interval lies on one side of 0.5, and an interval that holds 0.5
says "no clear preference" (and how many pairs that is over).
"""

from __future__ import annotations

from typing import Literal

Side = Literal["above", "below", "unclear", "none"]


def side_of_half(low: float | None, high: float | None) -> Side:
    """Where a probability's 95% interval lies against 0.5: wholly above, wholly below,
    holding it ("unclear"), or no interval at all ("none")."""
    if low is None or high is None:
        return "none"
    if low > 0.5:
        return "above"
    if high < 0.5:
        return "below"
    return "unclear"


def _figure(p: float, low: float, high: float) -> str:
    return f"{p:.3f} (95% interval {low:.3f} – {high:.3f})"


def length_bias(p: float | None, low: float | None, high: float | None, pairs: int) -> str:
    """What P(chosen longer) over `pairs` pairs with sides of different length means."""
    side = side_of_half(low, high)
    if side == "none" or p is None or low is None or high is None:
        return "No pair has sides of different length: there is no length preference to measure."
    figure = _figure(p, low, high)
    if side == "above":
        return (
            f"Chosen is the longer side more often than chance would make it: P(chosen longer) "
            f"= {figure} over {pairs:,} pairs. A model trained on these labels can learn that "
            "longer is better; check that the longer answers are better, not only longer."
        )
    if side == "below":
        return (
            f"Chosen is the shorter side more often than chance would make it: P(chosen "
            f"longer) = {figure} over {pairs:,} pairs. A model trained on these labels can "
            "learn to prefer shorter answers (in harmlessness data often a short refusal over "
            "a long harmful answer, which is the intended lesson)."
        )
    reach = max(0.5 - low, high - 0.5)
    return (
        f"No clear length preference: P(chosen longer) = {figure} over {pairs:,} pairs. The "
        f"interval holds 0.5; it still allows a preference of up to {reach:.2f} either way."
    )


def _vote_reading(
    name: str,
    p: float,
    low: float,
    high: float,
    votes: int,
    *,
    first: str,
    second: str,
    quantity: str,
    kind: str,
) -> str:
    """One annotator's reading of a P(...) over `votes` a/b votes: `first` / `second` say
    which side it prefers when the interval lies wholly above / below 0.5."""
    side = side_of_half(low, high)
    figure = f"{quantity}{_figure(p, low, high)}"
    if side == "above":
        return f"{name} {first}: {figure}."
    if side == "below":
        return f"{name} {second}: {figure}."
    return (
        f"{name}: no clear {kind} preference ({figure} over {votes:,} votes; the interval "
        "holds 0.5)."
    )


def position_bias(name: str, p: float, low: float, high: float, votes: int) -> str:
    """What one annotator's P(first shown wins) over `votes` a/b votes means."""
    return _vote_reading(
        name,
        p,
        low,
        high,
        votes,
        first="prefers the response shown first",
        second="prefers the response shown second",
        quantity="P(first shown wins) = ",
        kind="position",
    )


def longer_wins(name: str, p: float, low: float, high: float, votes: int) -> str:
    """What one annotator's P(longer wins) over `votes` a/b votes means."""
    return _vote_reading(
        name,
        p,
        low,
        high,
        votes,
        first="votes for the longer response more often than chance",
        second="votes for the shorter response more often than chance",
        quantity="",
        kind="length",
    )
