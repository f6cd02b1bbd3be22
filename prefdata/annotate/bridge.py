"""Human annotation in Argilla, in one import: push pairs (or candidates, or an audit sample)
as records, pull the annotators' responses back as the annotations contract.

The parts, each in its own module:
- `connection`: which server (arguments, $ARGILLA_API_URL / $ARGILLA_API_KEY, or the local
  service), the authenticated connection, users, workspaces, datasets;
- `records`: what a record shows (fields, the random shown order, the judges' verdict as a
  hint or a pre-filled suggestion), the dataset settings and the annotator guidelines;
- `push`: the stage `annotate-push` (refuses to change an existing record's shown order);
- `pull`: the stage `annotate-pull` (the shown order undone; reviews into `mislabeled`).
"""

from __future__ import annotations

from prefdata.annotate.connection import (
    ENV_KEY,
    ENV_URL,
    LABEL,
    RANKING,
    REVIEW,
    ArgillaError,
    Connection,
    Server,
    add_user,
    add_workspace,
    connect,
    connection,
    find_dataset,
    iter_records,
    list_users,
    list_workspaces,
    resolve_server,
)
from prefdata.annotate.pull import WaitingForAnnotations, pull, response_rows
from prefdata.annotate.push import push
from prefdata.annotate.records import (
    DISCARDED,
    JUDGE_FIELD,
    RATIONALE,
    REVIEW_LABELS,
    SHOWN_LABELS,
    STRENGTH,
    Verdict,
    annotator_guidelines,
    guidelines,
    hint_text,
    judge_suggestions,
    prompt_text,
    shown_order,
)

__all__ = [
    "DISCARDED",
    "ENV_KEY",
    "ENV_URL",
    "JUDGE_FIELD",
    "LABEL",
    "RANKING",
    "RATIONALE",
    "REVIEW",
    "REVIEW_LABELS",
    "SHOWN_LABELS",
    "STRENGTH",
    "ArgillaError",
    "Connection",
    "Server",
    "Verdict",
    "WaitingForAnnotations",
    "add_user",
    "add_workspace",
    "annotator_guidelines",
    "connect",
    "connection",
    "find_dataset",
    "guidelines",
    "hint_text",
    "iter_records",
    "judge_suggestions",
    "list_users",
    "list_workspaces",
    "prompt_text",
    "pull",
    "push",
    "resolve_server",
    "response_rows",
    "shown_order",
]
