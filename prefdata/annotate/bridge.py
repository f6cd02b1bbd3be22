"""Human annotation in Argilla: push pairs (or candidates, or an audit sample) as records,
pull the annotators' responses back as the annotations contract.

Which server: `url` / `api_key` arguments, else $ARGILLA_API_URL / $ARGILLA_API_KEY (any
Argilla 2.x server: an HF Space, the official Docker image), else the local service that
`prefdata annotate serve` started (prefdata.annotate.service). The argilla SDK
(`pip install 'prefdata[annotate]'`) is imported only here, lazily.

Push (`push`), by input columns:
- pairs (`prompt`, `chosen`, `rejected`; `pair_id` is computed when missing): one record per
  pair with fields `prompt`, `response_a`, `response_b`. Which response is shown first is
  randomised per record (a hash of `seed` and the pair id, so a re-push shows the same
  order) and stored in the record's metadata `order`: "ab" when canonical side a
  (prefdata.ids.canonical_sides) is shown as Response A. Humans thus get no position bias,
  and chosen / rejected is never revealed. Questions: `label` (a / b / tie, as shown),
  optional `strength` (rating 1-5, with `rating=True`), `rationale` (free text, optional).
- candidates (`prompt`, `completion`, optional `prompt_id` / `completion_id`): grouped by
  prompt. Two per prompt -> pair records as above; more -> a ranking dataset with fields
  `response_1` .. `response_K` (shown in a per-record random order, kept in metadata
  `completion_ids`) and a `ranking` question. A prompt with another count than K, or with
  one candidate, is not pushed and is counted in the report (`rejected_prompts`).
- an audit sample (`review=True`; pairs plus audit_sample's columns): records show
  `chosen` and `rejected` as labelled and ask `label_right` (yes / no / unsure): "is this
  label right?". `pull_review` turns the answers into the sample's `mislabeled` column for
  prefdata.quality.sample.mislabel_rate.

Every record's `external_id` is its item id (the pair id, the prompt id for a ranking), so a
second push of the same data updates the records instead of duplicating them.
`annotators_per_item=k` sets Argilla's TaskDistribution(min_submitted=k): a record leaves the
annotators' queue once k of them submitted it.

Suggestions (`suggestions=`, pairs only): an annotations table of machine votes (LLM judges,
rules; rows with annotator_kind "human", an `error` or no label are skipped and counted).
Argilla holds one suggestion per question and record, so each pair gets the judges' strict
plurality label (mapped to the shown order), with `agent` = the judges that voted it (joined
by " / ") and `score` = the share of the pair's judge votes that back it (a single judge's own
`confidence` when there is one judge vote; none without). Pairs whose judges split evenly
get no suggestion (never a guessed one); every judge's vote is listed in the record's
metadata `judge_votes`.

Pull (`pull`) -> the annotations contract, one row per response:
- `item_id` = the record's external id (pair id; completion id for rankings), `annotator`
  = the Argilla username, `annotator_kind` = "human", `label` = a / b / tie in canonical
  terms (the shown order undone), the rank as text for rankings ("1" = best), yes / no /
  unsure for reviews; `rationale`; `order` = what was shown ("ab" / "ba"; null for
  rankings); `raw` = the response values as JSON; `created_at` = when the response was last
  changed (UTC, ISO 8601); `record_id` = the record's external id (the prompt id for
  rankings, so one annotator's ranks group together); extra columns `status`
  (submitted / discarded) and `strength` (Int64, null unless asked).
- a discarded response stays a row: `label` null, `error` "discarded by the annotator",
  `status` "discarded" (agreement and consensus skip rows with an error).
- drafts are not final and are left out (counted in the report).
- `since`: only responses changed after that time; the report's `latest` is the value to
  pass next time for an incremental pull. An answer an annotator changed comes again with
  its new value: when appending pulls, keep the latest row per (item_id, annotator).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl

from prefdata import ids
from prefdata.errors import ContractError, MissingExtraError, PrefdataError
from prefdata.schema import PAIR_LABELS, conform, with_messages

ENV_URL = "ARGILLA_API_URL"
ENV_KEY = "ARGILLA_API_KEY"

LABEL = "label"
STRENGTH = "strength"
RATIONALE = "rationale"
RANKING = "ranking"
REVIEW = "label_right"
REVIEW_LABELS = ("yes", "no", "unsure")
Kind = Literal["pairs", "ranking", "review"]

SHOWN_LABELS = {"a": "Response A is better", "b": "Response B is better", "tie": "Tie"}
_SHORT = {"a": "Response A", "b": "Response B", "tie": "Tie"}
REVIEW_TEXT = {
    "yes": "Yes: the chosen response is better",
    "no": "No: the rejected response is better (mislabeled)",
    "unsure": "Can't tell",
}
DISCARDED = "discarded by the annotator"
PAGE = 1000  # the server's largest page of records
PUSH_BATCH = 256

GUIDELINES = {
    "pairs": (
        "Read the prompt, then both responses. Pick the response that better serves the "
        "person who wrote the prompt: correct, helpful, honest and harmless, in that order "
        "of weight when they conflict. Length and style are not merits in themselves. "
        "Choose Tie only when neither is better. The order of the two responses is random. "
        "A suggestion, when shown, is a model's vote: check it, do not copy it. Add a short "
        "rationale when the choice is not obvious. Discard a record only when it cannot be "
        "judged (broken text, a language you cannot read)."
    ),
    "ranking": (
        "Rank the responses from best (1) to worst for the person who wrote the prompt: "
        "correct, helpful, honest and harmless. The order they are shown in is random. "
        "Discard a record only when it cannot be judged."
    ),
    "review": (
        "Each record shows a prompt and two responses as they were labelled: CHOSEN was "
        "marked better than REJECTED. Answer whether that label is right. Answer No only "
        "when the rejected response is clearly better; use Can't tell when they are close."
    ),
}


class ArgillaError(PrefdataError):
    """The Argilla server could not be used; the message says how to fix it."""


# -- the SDK and HTTP ---------------------------------------------------------------------


def _sdk() -> Any:
    try:
        import argilla
    except ImportError as exc:
        raise MissingExtraError(
            f"Argilla support needs the argilla SDK ({exc}): pip install 'prefdata[annotate]'"
        ) from exc
    return argilla


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise MissingExtraError(
            f"Argilla support needs httpx ({exc}): pip install 'prefdata[annotate]'"
        ) from exc
    return httpx


@dataclass(frozen=True)
class Server:
    """Where the Argilla server is, which key to use, and where each came from."""

    url: str
    api_key: str
    url_source: str
    key_source: str


def resolve_server(url: str | None = None, api_key: str | None = None) -> Server:
    """The server to use: arguments, else $ARGILLA_API_URL / $ARGILLA_API_KEY, else the
    local service's last start (annotate/data). Raises ArgillaError when none is known."""
    local: tuple[str, str] | None = None
    if url:
        url_source = "the url argument"
    elif os.environ.get(ENV_URL):
        url, url_source = os.environ[ENV_URL], f"${ENV_URL}"
    else:
        local = _local()
        if local is None:
            raise ArgillaError(
                "no Argilla server configured: start the local one with `prefdata annotate "
                f"serve`, or set {ENV_URL} and {ENV_KEY} to use another (an HF Space, the "
                "official Docker image)"
            )
        url, url_source = local[0], "the local annotation service"
    if api_key:
        key_source = "the api_key argument"
    elif os.environ.get(ENV_KEY):
        api_key, key_source = os.environ[ENV_KEY], f"${ENV_KEY}"
    else:
        local = local or _local()
        if local is None or local[0].rstrip("/") != url.rstrip("/"):
            raise ArgillaError(
                f"no API key for the Argilla server at {url}: set {ENV_KEY} (an owner or "
                "admin key; the local service prints its key with `prefdata annotate status`)"
            )
        api_key, key_source = local[1], "the local annotation service"
    return Server(url.rstrip("/"), api_key, url_source, key_source)


def _local() -> tuple[str, str] | None:
    from prefdata.annotate.service import local_server

    return local_server()


@dataclass
class Connection:
    """An authenticated session with one Argilla server (REST, and the SDK when needed)."""

    server: Server
    http: Any
    me: dict[str, Any]
    _client: Any = field(default=None, repr=False)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one API call; HTTP failures become ArgillaError with a fix."""
        httpx = _httpx()
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.server, exc) from None
        if resp.status_code == 401:
            raise _refused(self.server)
        if resp.status_code >= 400:
            raise ArgillaError(
                f"the Argilla server at {self.server.url} answered {resp.status_code} to "
                f"{method} {path}: {_detail(resp)}"
                + (
                    f"; user '{self.me.get('username')}' (role {self.me.get('role')}) may not "
                    "do this: use an owner or admin API key"
                    if resp.status_code == 403
                    else ""
                )
            )
        return resp.json() if resp.content else None

    def sdk(self) -> Any:
        """The argilla SDK client for this server (created on first use)."""
        if self._client is None:
            rg = _sdk()
            self._client = rg.Argilla(api_url=self.server.url, api_key=self.server.api_key)
        return self._client

    def close(self) -> None:
        self.http.close()


def _detail(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return str(resp.text)[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return json.dumps(detail, ensure_ascii=False)[:500]


def _unreachable(server: Server, exc: Exception) -> ArgillaError:
    return ArgillaError(
        f"no Argilla server answers at {server.url} ({type(exc).__name__}: {exc}; the URL "
        f"came from {server.url_source}). Start the local one with `prefdata annotate serve` "
        f"(check it with `prefdata annotate status`), or set {ENV_URL} to a running server"
    )


def _refused(server: Server) -> ArgillaError:
    return ArgillaError(
        f"the Argilla server at {server.url} refused the API key (401 Unauthorized; the key "
        f"came from {server.key_source}). Use the key `prefdata annotate serve` / `prefdata "
        f"annotate status` prints for the local server, or set {ENV_KEY} to a valid key"
    )


def connect(
    url: str | None = None, api_key: str | None = None, *, timeout: float = 120
) -> Connection:
    """Check the server answers and accepts the key; return a Connection.

    Raises ArgillaError saying how to fix it: no server at the URL, a refused key.
    """
    httpx = _httpx()
    server = resolve_server(url, api_key)
    http = httpx.Client(
        base_url=server.url, headers={"X-Argilla-Api-Key": server.api_key}, timeout=timeout
    )
    conn = Connection(server, http, {})
    try:
        conn.me = conn.request("GET", "/api/v1/me")
    except ArgillaError:
        http.close()
        raise
    return conn


@contextlib.contextmanager
def connection(url: str | None = None, api_key: str | None = None) -> Iterator[Connection]:
    conn = connect(url, api_key)
    try:
        yield conn
    finally:
        conn.close()


# -- workspaces, users, datasets ----------------------------------------------------------


def _workspaces(conn: Connection) -> dict[str, str]:
    """name -> id of the workspaces this user sees."""
    items = conn.request("GET", "/api/v1/me/workspaces")["items"]
    return {w["name"]: w["id"] for w in items}


def add_workspace(
    name: str, *, url: str | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """Create a workspace (no-op when it exists). Output: `name`, `id`, `created`."""
    with connection(url, api_key) as conn:
        return _ensure_workspace(conn, name)


def _ensure_workspace(conn: Connection, name: str) -> dict[str, Any]:
    known = _workspaces(conn)
    if name in known:
        return {"name": name, "id": known[name], "created": False}
    ws = conn.request("POST", "/api/v1/workspaces", json={"name": name})
    return {"name": name, "id": ws["id"], "created": True}


def list_workspaces(*, url: str | None = None, api_key: str | None = None) -> list[str]:
    with connection(url, api_key) as conn:
        return sorted(_workspaces(conn))


def _users(conn: Connection) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = conn.request("GET", "/api/v1/users")["items"]
    return items


def add_user(
    username: str,
    *,
    role: Literal["annotator", "admin", "owner"] = "annotator",
    password: str | None = None,
    workspaces: Sequence[str] | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Create a user (or find it) and add it to `workspaces` (created when missing).

    An annotator sees the datasets of the workspaces they belong to. `workspaces=None`: the
    server's only workspace ("prefdata", created, when there is none; an error asking for
    one when there are several); `()`: none. Output: `username`, `role`, `api_key`,
    `password` (the new random one; None for a user that already existed), `workspaces`,
    `created`.
    """
    import secrets

    if role not in ("annotator", "admin", "owner"):
        raise ArgillaError(f"unknown role '{role}': use annotator, admin or owner")
    with connection(url, api_key) as conn:
        if workspaces is None:
            workspaces = [_default_workspace(conn)]
        existing = {u["username"]: u for u in _users(conn)}
        created = username not in existing
        if created:
            password = password or secrets.token_urlsafe(9)
            user = conn.request(
                "POST",
                "/api/v1/users",
                json={
                    "username": username,
                    "first_name": username,
                    "role": role,
                    "password": password,
                },
            )
        else:
            user = existing[username]
            password = None
        for ws in workspaces:
            ws_id = _ensure_workspace(conn, ws)["id"]
            members = conn.request("GET", f"/api/v1/workspaces/{ws_id}/users")["items"]
            if all(m["id"] != user["id"] for m in members):
                conn.request(
                    "POST", f"/api/v1/workspaces/{ws_id}/users", json={"user_id": user["id"]}
                )
        return {
            "username": username,
            "role": user["role"],
            "api_key": user.get("api_key"),
            "password": password,
            "workspaces": list(workspaces),
            "created": created,
        }


def list_users(*, url: str | None = None, api_key: str | None = None) -> list[dict[str, Any]]:
    """Users on the server: `username`, `role`, `workspaces` (names)."""
    with connection(url, api_key) as conn:
        out = []
        for u in _users(conn):
            ws = conn.request("GET", f"/api/v1/users/{u['id']}/workspaces")["items"]
            out.append(
                {
                    "username": u["username"],
                    "role": u["role"],
                    "workspaces": sorted(w["name"] for w in ws),
                }
            )
        return out


def _datasets(conn: Connection) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = conn.request("GET", "/api/v1/me/datasets")["items"]
    return items


def find_dataset(
    conn: Connection, name: str, workspace: str | None = None
) -> dict[str, Any] | None:
    """The dataset called `name` (in `workspace` when given), None if there is none.

    Without a workspace the name must be unique on the server; raises ArgillaError when
    several workspaces hold it.
    """
    spaces = {v: k for k, v in _workspaces(conn).items()}
    found = [
        {**d, "workspace": spaces.get(d["workspace_id"])}
        for d in _datasets(conn)
        if d["name"] == name and (workspace is None or spaces.get(d["workspace_id"]) == workspace)
    ]
    if len(found) > 1:
        where = ", ".join(sorted(str(d["workspace"]) for d in found))
        raise ArgillaError(
            f"dataset '{name}' exists in several workspaces ({where}): pass a workspace"
        )
    return found[0] if found else None


def _require_dataset(conn: Connection, name: str, workspace: str | None) -> dict[str, Any]:
    ds = find_dataset(conn, name, workspace)
    if ds is None:
        names = sorted({d["name"] for d in _datasets(conn)})
        where = f" in workspace '{workspace}'" if workspace else ""
        raise ArgillaError(
            f"no dataset '{name}'{where} on the Argilla server at {conn.server.url}; datasets "
            f"there: {names or 'none'}. Push it first with `prefdata annotate push DATA "
            f"--dataset {name}`, or check --workspace"
        )
    return ds


def _kind_of(conn: Connection, dataset_id: str) -> Kind:
    names = {
        q["name"] for q in conn.request("GET", f"/api/v1/datasets/{dataset_id}/questions")["items"]
    }
    if LABEL in names:
        return "pairs"
    if RANKING in names:
        return "ranking"
    if REVIEW in names:
        return "review"
    raise ArgillaError(
        f"dataset {dataset_id} was not made by prefdata (questions {sorted(names)}; expected "
        f"'{LABEL}', '{RANKING}' or '{REVIEW}')"
    )


# -- building records ---------------------------------------------------------------------


def prompt_text(messages: Sequence[dict[str, Any]]) -> str:
    """A prompt as annotators read it: a lone user message as is, a conversation by turns."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return str(messages[0]["content"])
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def shown_order(item_id: str, seed: int = 0) -> Literal["ab", "ba"]:
    """Which canonical side goes first for one item: a hash, so every push agrees."""
    return "ab" if int(ids.digest(f"{seed}\x1f{item_id}"), 16) % 2 == 0 else "ba"


def _swap(label: str) -> str:
    return {"a": "b", "b": "a"}.get(label, label)


def _shown_permutation(item_id: str, n: int, seed: int) -> list[int]:
    keys = [ids.digest(f"{seed}\x1f{item_id}\x1f{i}") for i in range(n)]
    return sorted(range(n), key=lambda i: keys[i])


@dataclass
class _Batch:
    """Records to log, the dataset settings they need, and what was left out."""

    kind: Kind
    records: list[dict[str, Any]]
    n_responses: int = 2
    report: dict[str, Any] = field(default_factory=dict)


def _pair_records(table: pl.DataFrame, seed: int) -> _Batch:
    if "pair_id" not in table.columns:
        table = ids.with_pair_ids(table)
    seen: set[str] = set()
    records = []
    for row in table.select("pair_id", "prompt_id", "prompt", "chosen", "rejected").iter_rows(
        named=True
    ):
        pid = row["pair_id"]
        if pid in seen:
            continue  # the same two responses twice: one record
        seen.add(pid)
        a, b = ids.canonical_sides(row["chosen"], row["rejected"])
        records.append(_pair_record(pid, row["prompt_id"], row["prompt"], a, b, seed))
    return _Batch("pairs", records, report={"duplicate_pairs": table.height - len(records)})


def _pair_record(
    pid: str, prompt_id: str, prompt: Sequence[dict[str, Any]], a: str, b: str, seed: int
) -> dict[str, Any]:
    order = shown_order(pid, seed)
    first, second = (a, b) if order == "ab" else (b, a)
    return {
        "id": pid,
        "fields": {"prompt": prompt_text(prompt), "response_a": first, "response_b": second},
        "metadata": {"order": order, "prompt_id": prompt_id},
    }


def _candidate_records(table: pl.DataFrame, seed: int) -> _Batch:
    if "completion_id" not in table.columns or "prompt_id" not in table.columns:
        table = ids.with_completion_ids(table)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in table.select("prompt_id", "prompt", "completion_id", "completion").iter_rows(
        named=True
    ):
        group = groups[row["prompt_id"]]
        if all(c["completion_id"] != row["completion_id"] for c in group):
            group.append(row)
    sizes = Counter(len(g) for g in groups.values())
    k = max(sizes) if sizes else 0
    rejected: Counter[str] = Counter()
    records = []
    if k == 2:
        for prompt_id, group in groups.items():
            if len(group) != 2:
                rejected["one_candidate"] += 1
                continue
            first, second = group[0]["completion"], group[1]["completion"]
            pid = ids.pair_id(prompt_id, first, second)
            a, b = ids.canonical_sides(first, second)
            records.append(_pair_record(pid, prompt_id, group[0]["prompt"], a, b, seed))
        return _Batch("pairs", records, report={"rejected_prompts": dict(rejected)})
    for prompt_id, group in groups.items():
        if len(group) != k:
            rejected[f"{len(group)}_candidates_not_{k}"] += 1
            continue
        perm = _shown_permutation(prompt_id, k, seed)
        shown = [group[i] for i in perm]
        fields = {"prompt": prompt_text(group[0]["prompt"])}
        fields.update({f"response_{i + 1}": c["completion"] for i, c in enumerate(shown)})
        records.append(
            {
                "id": prompt_id,
                "fields": fields,
                "metadata": {"completion_ids": [c["completion_id"] for c in shown]},
            }
        )
    return _Batch("ranking", records, n_responses=k, report={"rejected_prompts": dict(rejected)})


def _review_records(table: pl.DataFrame) -> _Batch:
    if "pair_id" not in table.columns:
        table = ids.with_pair_ids(table)
    records = []
    seen: set[str] = set()
    for row in table.select("pair_id", "prompt", "chosen", "rejected").iter_rows(named=True):
        if row["pair_id"] in seen:
            continue
        seen.add(row["pair_id"])
        records.append(
            {
                "id": row["pair_id"],
                "fields": {
                    "prompt": prompt_text(row["prompt"]),
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                },
                "metadata": {},
            }
        )
    return _Batch("review", records, report={"duplicate_pairs": table.height - len(records)})


@dataclass
class _Suggestion:
    label: str  # canonical
    score: float | None
    agent: str
    votes: list[tuple[str, str]]  # every judge vote (judge, canonical label)


def judge_suggestions(votes: pl.DataFrame) -> tuple[dict[str, _Suggestion], dict[str, int]]:
    """Machine votes (annotations contract) -> one suggestion per item, and skip counts.

    See the module doc for the rule (strict plurality; score = share of votes; agent = the
    judges behind the label).
    """
    from prefdata.io.importers.pandalm import winner

    votes = conform(votes, "annotations", source="suggestions")
    counts: Counter[str] = Counter()
    by_item: dict[str, list[tuple[str, str, float | None]]] = defaultdict(list)
    has_conf = "confidence" in votes.columns
    has_err = "error" in votes.columns
    for row in votes.iter_rows(named=True):
        if row["annotator_kind"] == "human":
            counts["skipped_human"] += 1
        elif has_err and row["error"] is not None:
            counts["skipped_error"] += 1
        elif row["label"] not in PAIR_LABELS:
            counts["skipped_not_a_pair_label"] += 1
        else:
            conf = row["confidence"] if has_conf else None
            by_item[row["item_id"]].append((row["annotator"], row["label"], conf))
            counts["used"] += 1
    out: dict[str, _Suggestion] = {}
    for item, item_votes in by_item.items():
        tally = Counter(label for _, label, _ in item_votes)
        top, _why = winner(tally)
        listing = [(who, label) for who, label, _ in item_votes]
        if top is None:
            counts["items_judges_split"] += 1
            out[item] = _Suggestion("", None, "", listing)
            continue
        backers = sorted({who for who, label, _ in item_votes if label == top})
        score = item_votes[0][2] if len(item_votes) == 1 else tally[top] / len(item_votes)
        out[item] = _Suggestion(top, score, " / ".join(_agent(b) for b in backers), listing)
    return out, dict(counts)


def _agent(name: str) -> str:
    # Argilla accepts letters, digits, spaces and - _ : . / in an agent name.
    return re.sub(r"[^A-Za-z0-9\-_:./ ]", "_", name) or "judge"


def _settings(rg: Any, batch: _Batch, k: int, rating: bool, guidelines: str | None) -> Any:
    text = guidelines or GUIDELINES[batch.kind]
    distribution = rg.TaskDistribution(min_submitted=k)
    rationale = rg.TextQuestion(
        name=RATIONALE, title="Why? (optional)", required=False, use_markdown=False
    )
    if batch.kind == "pairs":
        questions = [
            rg.LabelQuestion(
                name=LABEL, title="Which response is better?", labels=SHOWN_LABELS, required=True
            )
        ]
        if rating:
            questions.append(
                rg.RatingQuestion(
                    name=STRENGTH,
                    title="How clear is the difference? (1 = barely, 5 = very)",
                    values=[1, 2, 3, 4, 5],
                    required=False,
                )
            )
        fields = [
            rg.TextField(name="prompt", title="Prompt"),
            rg.TextField(name="response_a", title="Response A"),
            rg.TextField(name="response_b", title="Response B"),
        ]
        metadata = [
            rg.TermsMetadataProperty(
                name="order", options=["ab", "ba"], visible_for_annotators=False
            )
        ]
    elif batch.kind == "ranking":
        names = [f"response_{i + 1}" for i in range(batch.n_responses)]
        fields = [rg.TextField(name="prompt", title="Prompt")]
        fields += [rg.TextField(name=n, title=f"Response {n.split('_')[1]}") for n in names]
        questions = [
            rg.RankingQuestion(
                name=RANKING,
                title="Rank the responses (1 = best)",
                values={n: f"Response {n.split('_')[1]}" for n in names},
                required=True,
            )
        ]
        metadata = []
    else:
        fields = [
            rg.TextField(name="prompt", title="Prompt"),
            rg.TextField(name="chosen", title="CHOSEN (labelled better)"),
            rg.TextField(name="rejected", title="REJECTED (labelled worse)"),
        ]
        questions = [
            rg.LabelQuestion(
                name=REVIEW, title="Is the label right?", labels=REVIEW_TEXT, required=True
            )
        ]
        metadata = []
    return rg.Settings(
        fields=fields,
        questions=[*questions, rationale],
        metadata=metadata,
        guidelines=text,
        allow_extra_metadata=True,
        distribution=distribution,
    )


# -- push ---------------------------------------------------------------------------------


def push(
    table: pl.DataFrame,
    *,
    dataset: str,
    workspace: str | None = None,
    annotators_per_item: int = 1,
    suggestions: pl.DataFrame | None = None,
    guidelines: str | None = None,
    rating: bool = False,
    review: bool = False,
    seed: int = 0,
    url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Push pairs, candidates or an audit sample to Argilla as records (see the module doc).

    Creates the dataset (and the workspace) when missing. An existing dataset must have been
    made for the same kind of data; its records are updated in place (matched on their item
    id), and its distribution and guidelines are set to the ones asked for (reported in
    `settings_updated`). `rating` adds the optional strength question to a new dataset only.
    Output: a report with `url`, `dataset`, `workspace`, `dataset_id`, `kind`, `records`
    (pushed), `created`, `updated`, `suggestions` (records that got one),
    `annotators_per_item`, `annotators_in_workspace`, and skip counts.
    """
    if annotators_per_item < 1:
        raise ArgillaError("annotators_per_item must be at least 1")
    table = with_messages(table)
    if review:
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in table.columns]
        if missing:
            raise ContractError(f"an audit sample needs columns {missing}", column=missing[0])
        batch = _review_records(table)
    elif {"chosen", "rejected"} <= set(table.columns):
        batch = _pair_records(table, seed)
    elif "completion" in table.columns:
        batch = _candidate_records(table, seed)
    else:
        raise ContractError(
            "push needs pairs (prompt, chosen, rejected) or candidates (prompt, completion); "
            f"the table has {table.columns}",
            column="chosen",
        )
    if not batch.records:
        raise ArgillaError(f"nothing to push: {batch.report}")
    sugg: dict[str, _Suggestion] = {}
    report: dict[str, Any] = {"kind": batch.kind, **batch.report}
    if suggestions is not None:
        if batch.kind != "pairs":
            raise ArgillaError("suggestions are supported for pair datasets only")
        sugg, counts = judge_suggestions(suggestions)
        pushed = {r["id"] for r in batch.records}
        report["suggestion_votes"] = counts
        report["suggestion_items_not_pushed"] = len(set(sugg) - pushed)

    with connection(url, api_key) as conn:
        rg = _sdk()
        client = conn.sdk()
        existing = find_dataset(conn, dataset, workspace)
        if existing is None:
            ws_name = workspace or _default_workspace(conn)
            ws = _ensure_workspace(conn, ws_name)
            settings = _settings(rg, batch, annotators_per_item, rating, guidelines)
            ds = _sdk_call(
                conn,
                "create the dataset",
                lambda: rg.Dataset(
                    name=dataset, workspace=ws_name, settings=settings, client=client
                ).create(),
            )
            ds_id = str(ds.id)
            report["workspace_created"] = ws["created"]
        else:
            ws_name = existing["workspace"]
            ds_id = existing["id"]
            kind = _kind_of(conn, ds_id)
            if kind != batch.kind:
                raise ArgillaError(
                    f"dataset '{dataset}' holds {kind} records, not {batch.kind}: push to "
                    "another --dataset name"
                )
            report["settings_updated"] = _update_settings(
                conn, existing, annotators_per_item, guidelines
            )
            ds = _sdk_call(
                conn, "open the dataset", lambda: client.datasets(name=dataset, workspace=ws_name)
            )
        questions = {
            q["name"] for q in conn.request("GET", f"/api/v1/datasets/{ds_id}/questions")["items"]
        }
        records = [_sdk_record(rg, r, batch.kind, sugg, questions) for r in batch.records]
        before = _record_count(conn, ds_id)
        for start in range(0, len(records), PUSH_BATCH):
            chunk = records[start : start + PUSH_BATCH]
            _sdk_call(conn, "log records", lambda chunk=chunk: _upsert(client, ds, chunk))
        created = _record_count(conn, ds_id) - before
        members = conn.request("GET", f"/api/v1/workspaces/{_workspaces(conn)[ws_name]}/users")[
            "items"
        ]
    report.update(
        {
            "url": conn.server.url,
            "dataset": dataset,
            "dataset_id": ds_id,
            "workspace": ws_name,
            "records": len(records),
            "created": created,
            "updated": len(records) - created,
            "suggestions": sum(
                1 for r in batch.records if sugg.get(r["id"]) and sugg[r["id"]].label
            ),
            "annotators_per_item": annotators_per_item,
            "annotators_in_workspace": sum(1 for m in members if m["role"] == "annotator"),
        }
    )
    return report


def _default_workspace(conn: Connection) -> str:
    spaces = sorted(_workspaces(conn))
    if len(spaces) == 1:
        return spaces[0]
    if not spaces:
        return "prefdata"
    raise ArgillaError(f"several workspaces on the server ({', '.join(spaces)}): pass a workspace")


def _update_settings(
    conn: Connection, ds: dict[str, Any], k: int, guidelines: str | None
) -> list[str]:
    """Bring an existing dataset's distribution (and guidelines, when given) up to date."""
    change: dict[str, Any] = {}
    if (ds.get("distribution") or {}).get("min_submitted") != k:
        # The server's worker then recomputes every record's status.
        change["distribution"] = {"strategy": "overlap", "min_submitted": k}
    if guidelines is not None and ds.get("guidelines") != guidelines:
        change["guidelines"] = guidelines
    if change:
        conn.request("PATCH", f"/api/v1/datasets/{ds['id']}", json=change)
    return sorted(change)


def _sdk_record(
    rg: Any, rec: dict[str, Any], kind: Kind, sugg: dict[str, _Suggestion], questions: set[str]
) -> Any:
    metadata = dict(rec["metadata"])
    suggestions = []
    s = sugg.get(rec["id"])
    if s is not None:
        order = metadata["order"]
        # In the shown order, since annotators may read it.
        metadata["judge_votes"] = "; ".join(
            f"{who}: {_SHORT[label if order == 'ab' else _swap(label)]}" for who, label in s.votes
        )
        if s.label and LABEL in questions:
            shown = s.label if order == "ab" else _swap(s.label)
            suggestions.append(
                rg.Suggestion(
                    question_name=LABEL, value=shown, score=s.score, agent=s.agent, type="model"
                )
            )
    return rg.Record(id=rec["id"], fields=rec["fields"], metadata=metadata, suggestions=suggestions)


def _record_count(conn: Connection, dataset_id: str) -> int:
    page = conn.request("GET", f"/api/v1/datasets/{dataset_id}/records", params={"limit": 1})
    return int(page.get("total") or 0)


def _upsert(client: Any, ds: Any, records: list[Any]) -> None:
    """Create or update records, matched on their external id.

    Not the SDK's public `records.log`, which draws a progress bar on every call. (Neither
    says how many records were updated: argilla-server 2.8's response model drops
    `updated_item_ids`, so push counts the records before and after.)
    """
    models = []
    for record in records:
        record.dataset = ds  # binds suggestion question names to the dataset's question ids
        models.append(record.api_model())
    client.api.records.bulk_upsert(dataset_id=ds.id, records=models)


def _sdk_call(conn: Connection, what: str, func: Any) -> Any:
    httpx = _httpx()
    try:
        return func()
    except httpx.TransportError as exc:
        raise _unreachable(conn.server, exc) from None
    except PrefdataError:
        raise
    except Exception as exc:
        raise ArgillaError(f"could not {what} on {conn.server.url}: {exc}") from None


# -- pull ---------------------------------------------------------------------------------


def _parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ArgillaError(
                f"cannot read time '{value}': use ISO 8601, e.g. 2025-03-01T12:00:00Z "
                "(the `latest` of the previous pull)"
            ) from None
    # The server's times are UTC without a zone.
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iter_records(conn: Connection, dataset_id: str) -> Iterator[dict[str, Any]]:
    """Every record of a dataset with its responses, in insertion order, page by page."""
    offset = 0
    while True:
        page = conn.request(
            "GET",
            f"/api/v1/datasets/{dataset_id}/records",
            params={"include": "responses", "offset": offset, "limit": PAGE},
        )
        items = page["items"]
        yield from items
        offset += len(items)
        if len(items) < PAGE:
            return


ANNOTATION_SCHEMA: dict[str, Any] = {
    "item_id": pl.String,
    "annotator": pl.String,
    "annotator_kind": pl.String,
    "label": pl.String,
    "rationale": pl.String,
    "raw": pl.String,
    "error": pl.String,
    "order": pl.String,
    "created_at": pl.String,
    "record_id": pl.String,
    "status": pl.String,
    "strength": pl.Int64,
}


def pull(
    dataset: str,
    *,
    workspace: str | None = None,
    since: str | datetime | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Submitted and discarded responses of a dataset -> (annotations, report).

    See the module doc for the columns. Needs an owner or admin key (annotators may not list
    other people's responses). Report: `records`, `submitted`, `discarded`, `drafts_skipped`,
    `older_than_since`, `annotators`, `since`, `latest` (pass it as `since` next time).
    """
    cutoff = _parse_time(since) if since is not None else None
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    latest: datetime | None = None
    with connection(url, api_key) as conn:
        ds = _require_dataset(conn, dataset, workspace)
        kind = _kind_of(conn, ds["id"])
        names = {u["id"]: u["username"] for u in _users(conn)}
        for rec in iter_records(conn, ds["id"]):
            counts["records"] += 1
            for resp in rec.get("responses") or []:
                changed = _parse_time(resp["updated_at"])
                latest = changed if latest is None or changed > latest else latest
                if resp["status"] == "draft":
                    counts["drafts_skipped"] += 1
                    continue
                if cutoff is not None and changed <= cutoff:
                    counts["older_than_since"] += 1
                    continue
                counts[resp["status"]] += 1
                who = names.get(resp["user_id"], str(resp["user_id"]))
                rows.extend(response_rows(kind, rec, resp, who, _iso(changed)))
    table = pl.DataFrame(rows, schema=ANNOTATION_SCHEMA).sort("created_at", "item_id", "annotator")
    table = conform(table, "annotations")
    report = {
        "url": conn.server.url,
        "dataset": dataset,
        "workspace": ds["workspace"],
        "kind": kind,
        "records": counts["records"],
        "submitted": counts["submitted"],
        "discarded": counts["discarded"],
        "drafts_skipped": counts["drafts_skipped"],
        "older_than_since": counts["older_than_since"],
        "rows": table.height,
        "annotators": table["annotator"].n_unique(),
        "since": _iso(cutoff) if cutoff else None,
        "latest": _iso(latest) if latest else (_iso(cutoff) if cutoff else None),
    }
    return table, report


def _value(values: dict[str, Any] | None, name: str) -> Any:
    entry = (values or {}).get(name)
    return entry.get("value") if isinstance(entry, dict) else None


def response_rows(
    kind: Kind, rec: dict[str, Any], resp: dict[str, Any], who: str, when: str
) -> list[dict[str, Any]]:
    """One response of one record (as the REST API returns them) -> annotation rows.

    Undoes the shown order (metadata `order`; `completion_ids` for rankings); a discarded
    response, or one without an answer, is one row with `error` set and no label.
    """
    values = resp.get("values") or {}
    external = rec.get("external_id") or str(rec["id"])
    meta = rec.get("metadata") or {}
    base = {
        "annotator": who,
        "annotator_kind": "human",
        "rationale": _value(values, RATIONALE) or None,
        "raw": json.dumps(values, ensure_ascii=False, sort_keys=True),
        "created_at": when,
        "record_id": external,
        "status": resp["status"],
        "strength": None,
        "error": None,
        "order": None,
    }
    discarded = resp["status"] == "discarded"
    if kind == "ranking":
        shown_ids = meta.get("completion_ids") or []
        ranking = _value(values, RANKING) or []
        if discarded or not ranking:
            return [{**base, "item_id": external, "label": None, "error": DISCARDED}]
        out = []
        for entry in ranking:
            position = int(str(entry["value"]).rsplit("_", 1)[1]) - 1
            item = shown_ids[position] if position < len(shown_ids) else entry["value"]
            out.append({**base, "item_id": item, "label": str(entry["rank"])})
        return out
    if kind == "review":
        label = None if discarded else _value(values, REVIEW)
        return [
            {
                **base,
                "item_id": external,
                "label": label,
                "error": DISCARDED if label is None else None,
            }
        ]
    order = meta.get("order")
    shown = None if discarded else _value(values, LABEL)
    label = None if shown is None else (shown if order == "ab" else _swap(shown))
    strength = _value(values, STRENGTH)
    return [
        {
            **base,
            "item_id": external,
            "label": label,
            "order": order,
            "strength": int(strength) if strength is not None else None,
            "error": DISCARDED if label is None else None,
        }
    ]


def pull_review(
    sample: pl.DataFrame,
    *,
    dataset: str,
    workspace: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Fill an audit sample's `mislabeled` column from its review dataset.

    Input: the sample that was pushed with `review=True` (prompt, chosen, rejected or
    pair_id; audit_sample's `weight`). Output: (the sample with `mislabeled` = True when more
    reviewers answered "no" than "yes", False when more said "yes", null when they tie, all
    said "unsure" or nobody reviewed it, plus `review_votes`; report), ready for
    prefdata.quality.sample.mislabel_rate.
    """
    votes, report = pull(dataset, workspace=workspace, url=url, api_key=api_key)
    if report["kind"] != "review":
        raise ArgillaError(
            f"dataset '{dataset}' is not a review dataset (it holds {report['kind']})"
        )
    if "pair_id" not in sample.columns:
        sample = ids.with_pair_ids(with_messages(sample))
    tally = (
        votes.filter(pl.col("label").is_in(["yes", "no"]))
        .group_by("item_id")
        .agg(
            (pl.col("label") == "no").sum().alias("__no"),
            (pl.col("label") == "yes").sum().alias("__yes"),
        )
    )
    n_votes = votes.filter(pl.col("label").is_not_null()).group_by("item_id").len("review_votes")
    out = (
        sample.drop("mislabeled", strict=False)
        .join(tally, left_on="pair_id", right_on="item_id", how="left")
        .join(n_votes, left_on="pair_id", right_on="item_id", how="left")
        .with_columns(
            pl.when(pl.col("__no") > pl.col("__yes"))
            .then(True)
            .when(pl.col("__yes") > pl.col("__no"))
            .then(False)
            .otherwise(None)
            .alias("mislabeled"),
            pl.col("review_votes").fill_null(0).cast(pl.Int64),
        )
        .drop("__no", "__yes")
    )
    report["reviewed_items"] = int(out["mislabeled"].is_not_null().sum())
    report["mislabeled_items"] = int(out["mislabeled"].fill_null(False).sum())
    return out, report
