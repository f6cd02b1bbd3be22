"""Dawid and Skene's EM as in the paper, item by item in plain Python: the independent
reference that the consensus tests and the report's annotator-accuracy figures are checked
against (it uses nothing from prefdata, so it cannot share a bug with it)."""

from __future__ import annotations

import math

ItemVotes = dict[str, list[tuple[str, int]]]
"""item -> its votes as (annotator, label index); the items' order is the caller's."""
Confusion = dict[str, list[list[float]]]
"""annotator -> P(gives label c | true label t), as conf[t][c]."""


def dawid_skene_em(
    by_item: ItemVotes, k: int, *, smoothing: float, max_iter: int, tol: float = 0.0
) -> tuple[dict[str, list[float]], list[float], Confusion]:
    """(posteriors, prior, confusions) of Dawid-Skene over `k` labels.

    Starts from each item's vote shares and an M-step, then runs up to `max_iter` rounds of
    (E-step, M-step), stopping after a round in which no posterior moved by `tol` or more
    (tol=0: exactly max_iter rounds). `smoothing` is added to every prior and confusion count.
    The posteriors are those of the last E-step; prior and confusions those of the last
    M-step (`posterior` gives the posteriors they imply)."""
    annotators = sorted({a for votes in by_item.values() for a, _ in votes})
    post: dict[str, list[float]] = {}
    for item, votes in by_item.items():
        n = [0.0] * k
        for _, c in votes:
            n[c] += 1
        post[item] = [x / sum(n) for x in n]

    def m_step() -> tuple[list[float], Confusion]:
        prior = [sum(p[t] for p in post.values()) + smoothing for t in range(k)]
        prior = [p / sum(prior) for p in prior]
        conf = {a: [[smoothing] * k for _ in range(k)] for a in annotators}
        for item, votes in by_item.items():
            for a, c in votes:
                for t in range(k):
                    conf[a][t][c] += post[item][t]
        return prior, {a: [[x / sum(row) for x in row] for row in conf[a]] for a in annotators}

    prior, conf = m_step()
    for _ in range(max_iter):
        change = 0.0
        for item, votes in by_item.items():
            new = posterior(votes, prior, conf)
            change = max(change, max(abs(x - y) for x, y in zip(new, post[item], strict=True)))
            post[item] = new
        prior, conf = m_step()
        if change < tol:
            break
    return post, prior, conf


def posterior(votes: list[tuple[str, int]], prior: list[float], conf: Confusion) -> list[float]:
    """P(true label | an item's votes) under `prior` and the annotators' confusions."""
    logs = [
        math.log(prior[t]) + sum(math.log(conf[a][t][c]) for a, c in votes)
        for t in range(len(prior))
    ]
    top = max(logs)
    w = [math.exp(x - top) for x in logs]
    return [x / sum(w) for x in w]
