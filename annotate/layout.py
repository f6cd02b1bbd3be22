"""An ASGI wrapper that adds prefdata's layout rules to the pages of Argilla's web app.

Below 1100 px of width Argilla 2.8 stacks the record (prompt and responses, each shown in
full) above the question form, so on a 1024 x 700 screen the question sits below the fold
and annotators scroll past long responses to reach it. The rule below gives the record a
scrolling box of its own there, so the question and its options stay on screen. Wider
screens keep Argilla's own side-by-side layout.

Only HTML pages are touched (the app's single page and its fallbacks); their compression is
switched off so the rule can be added, and the content length is set again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# 420 px: the question, its options, the "Why?" box and the buttons below the record.
LAYOUT_CSS = (
    "@media (max-width: 1099px) {"
    " .resizable-v__left { max-height: calc(100svh - 420px); min-height: 160px;"
    " overflow-y: auto; } }"
)
STYLE = f'<style id="prefdata-layout">{LAYOUT_CSS}</style>'.encode()


def _wants_html(scope: Scope) -> bool:
    if scope.get("type") != "http" or scope.get("method") != "GET":
        return False
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    return b"text/html" in accept


def with_layout(app: App) -> App:
    """`app` whose HTML pages carry LAYOUT_CSS."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if not _wants_html(scope):
            await app(scope, receive, send)
            return
        # No compression for a page: the rule goes into its text.
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]
        start: list[Message] = []  # the held response start (an HTML page)
        chunks: list[bytes] = []
        passthrough: list[bool] = []  # set once: not a page to change

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                is_html = headers.get(b"content-type", b"").startswith(b"text/html")
                if message.get("status") != 200 or not is_html or b"content-encoding" in headers:
                    passthrough.append(True)
                    await send(message)
                else:
                    start.append(message)
                return
            if passthrough:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = b"".join(chunks).replace(b"</head>", STYLE + b"</head>", 1)
            kept = [(k, v) for k, v in start[0]["headers"] if k != b"content-length"]
            kept.append((b"content-length", str(len(page)).encode()))
            await send({**start[0], "headers": kept})
            await send({"type": "http.response.body", "body": page})

        await app(scope, receive, capture)

    return wrapped
