"""The connection to an Argilla server, and its users, workspaces and datasets.

Which server: `url` / `api_key` arguments, else $ARGILLA_API_URL / $ARGILLA_API_KEY (any
Argilla 2.x server: an HF Space, the official Docker image), else the local service that
`prefdata annotate serve` started (prefdata.annotate.service). The argilla SDK
(`pip install 'prefdata[annotate]'`) is imported only in this package, lazily; every HTTP
failure becomes an `ArgillaError` that says how to fix it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prefdata.errors import MissingExtraError, PrefdataError

ENV_URL = "ARGILLA_API_URL"
ENV_KEY = "ARGILLA_API_KEY"

# The question each kind of dataset asks: how pull recognises a dataset prefdata made.
LABEL = "label"
RANKING = "ranking"
REVIEW = "label_right"
Kind = Literal["pairs", "ranking", "review"]


class ArgillaError(PrefdataError):
    """The Argilla server could not be used; the message says how to fix it."""


# -- the SDK and HTTP ---------------------------------------------------------------------


def sdk_module() -> Any:
    try:
        import argilla
    except ImportError as exc:
        raise MissingExtraError(
            f"Argilla support needs the argilla SDK ({exc}): pip install 'prefdata[annotate]'"
        ) from exc
    return argilla


def httpx_module() -> Any:
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
        httpx = httpx_module()
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.server, exc) from None
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
            rg = sdk_module()
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


def unreachable(server: Server, exc: Exception) -> ArgillaError:
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
    httpx = httpx_module()
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


def workspace_ids(conn: Connection) -> dict[str, str]:
    """name -> id of the workspaces this user sees."""
    items = conn.request("GET", "/api/v1/me/workspaces")["items"]
    return {w["name"]: w["id"] for w in items}


def add_workspace(
    name: str, *, url: str | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """Create a workspace (no-op when it exists). Output: `name`, `id`, `created`."""
    with connection(url, api_key) as conn:
        return ensure_workspace(conn, name)


def ensure_workspace(conn: Connection, name: str) -> dict[str, Any]:
    known = workspace_ids(conn)
    if name in known:
        return {"name": name, "id": known[name], "created": False}
    ws = conn.request("POST", "/api/v1/workspaces", json={"name": name})
    return {"name": name, "id": ws["id"], "created": True}


def list_workspaces(*, url: str | None = None, api_key: str | None = None) -> list[str]:
    with connection(url, api_key) as conn:
        return sorted(workspace_ids(conn))


def server_users(conn: Connection) -> list[dict[str, Any]]:
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
            workspaces = [default_workspace(conn)]
        existing = {u["username"]: u for u in server_users(conn)}
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
            ws_id = ensure_workspace(conn, ws)["id"]
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
        for u in server_users(conn):
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
    spaces = {v: k for k, v in workspace_ids(conn).items()}
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


def require_dataset(conn: Connection, name: str, workspace: str | None) -> dict[str, Any]:
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


def dataset_kind(conn: Connection, dataset_id: str) -> Kind:
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


def default_workspace(conn: Connection) -> str:
    spaces = sorted(workspace_ids(conn))
    if len(spaces) == 1:
        return spaces[0]
    if not spaces:
        return "prefdata"
    raise ArgillaError(f"several workspaces on the server ({', '.join(spaces)}): pass a workspace")


PAGE = 1000  # the server's largest page of records


def iter_records(
    conn: Connection, dataset_id: str, *, include: str | None = "responses"
) -> Iterator[dict[str, Any]]:
    """Every record of a dataset (with its responses by default), in insertion order, page
    by page."""
    offset = 0
    while True:
        params: dict[str, Any] = {"offset": offset, "limit": PAGE}
        if include:
            params["include"] = include
        page = conn.request("GET", f"/api/v1/datasets/{dataset_id}/records", params=params)
        items = page["items"]
        yield from items
        offset += len(items)
        if len(items) < PAGE:
            return


def field_names(conn: Connection, dataset_id: str) -> set[str]:
    """The names of a dataset's fields."""
    items = conn.request("GET", f"/api/v1/datasets/{dataset_id}/fields")["items"]
    return {f["name"] for f in items}
