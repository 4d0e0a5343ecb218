"""The dashboard's HTTP face (FastAPI): the page, its live updates (server-sent events), the JSON API that
the OpenAPI document at /openapi.json describes, Swagger UI at /docs, and the two actions.

Every asset is served by the app itself (htmx, its SSE extension, Swagger UI from the swagger-ui-bundle-v2
package): the page works with no network beyond this server. Defences at the edge: a Host header allow-list
(a page elsewhere cannot read this one through DNS rebinding), a Content-Security-Policy allowing nothing
but this origin, request bodies capped (no endpoint takes one), and for approve and abort: off unless tokens
are configured, a bearer token (never a cookie, so no cross-site request can carry it), and cross-origin
requests refused outright.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Header, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dashboard import render
from dashboard.board import PARTS, Board
from dashboard.history import LocalHistory
from dashboard.views import ActionResult, BoardView, EnvironmentView, FiguresView, Problem, TimelineView
from rollout.proposals import RolloutError
from rollout.scm import ENV_NAME as _ENV_NAME
from rollout.scm import Conflict, SCMError

STATIC = FilePath(__file__).resolve().parent / "static"
MAX_BODY = 4096  # bytes: no endpoint reads a body
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = CSP.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)  # Swagger UI sets inline styles
ENV_PATTERN = _ENV_NAME.pattern
SHA_PATTERN = r"^[0-9a-f]{7,64}$"

EnvName = Annotated[
    str, Path(pattern=ENV_PATTERN, max_length=63, description="An environment (a DNS label).")
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]


class Edge:
    """Pure ASGI middleware: security headers on every response, and bodies over MAX_BODY refused with 413."""

    def __init__(self, app: ASGI, max_body: int = MAX_BODY):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] == "/docs" else CSP

        async def headed(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _too_large(headed, self.max_body)
            return
        seen = 0
        refused = False

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    refused = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, headed)
        except _BodyTooLarge:
            if refused:
                await _too_large(headed, self.max_body)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes (no endpoint takes one)"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def same_origin(request: Request) -> bool:
    """Whether a request comes from this dashboard's own pages (or from no browser page at all)."""
    site = request.headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # curl, scripts: no page of another origin is involved
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and parts.netloc == host and parts.path in ("", "/")


def sse(event: str, data: str) -> str:
    lines = data.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def create_app(board: Board, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The dashboard for `board`. `allowed_hosts`: Host header values accepted (None: any)."""
    board.renderer = render.fragment

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await board.start()
        try:
            yield
        finally:
            await board.stop()

    app = FastAPI(
        title="Sluice dashboard",
        version="1",
        summary="Environments, rollouts, gates and history, read from Git and the metrics.",
        description=(
            "The JSON behind `sluice ui`'s page. Everything is read from Git (manifests, their history, "
            "policies) and the metric providers; nothing is stored. `/events` streams the page's fragments "
            "as server-sent events. Approve and abort go through Git exactly like `sluice rollout approve` "
            "and `sluice rollout abort`, with the acting identity in the commit; they need a bearer token and "
            "are off unless the dashboard was started with `--token-file`."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(Edge)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    def known(env: str) -> str:
        if env not in board.envs:
            raise HTTPException(
                404, f"no environment {env!r} on this dashboard (it shows: {', '.join(board.names())})"
            )
        return env

    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": Problem, "description": "No such environment on this dashboard."}
    }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(render.page(board))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(render.render("docs.html"))

    @app.get("/healthz", summary="Liveness", tags=["meta"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/environments", response_model=BoardView, summary="Every environment", tags=["board"])
    async def environments() -> BoardView:
        return board.board()

    @app.get(
        "/api/environments/{env}",
        response_model=EnvironmentView,
        responses=not_found,
        summary="One environment: stable model, quarantine, rollout, gates, what happens next",
        tags=["board"],
    )
    async def environment(env: EnvName) -> EnvironmentView:
        return board.environment(known(env))

    @app.get(
        "/api/environments/{env}/timeline",
        response_model=TimelineView,
        responses=not_found,
        summary="Traffic per predictor at every commit of the manifest",
        tags=["board"],
    )
    async def timeline(env: EnvName) -> TimelineView:
        return board.timeline(known(env))

    @app.get(
        "/api/environments/{env}/figures",
        response_model=FiguresView,
        responses=not_found,
        summary="Live figures per predictor, and their recent history",
        tags=["board"],
    )
    async def figures(env: EnvName) -> FiguresView:
        return board.figures(known(env))

    @app.get(
        "/events",
        summary="The page's live updates",
        description=(
            "Server-sent events: `state-<env>`, `timeline-<env>` and `figures-<env>`, each carrying an HTML "
            "fragment of the page. All are sent once on connect, then each time it changes."
        ),
        responses={
            200: {
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                "description": "The stream.",
            },
            503: {"model": Problem, "description": "Too many open streams."},
        },
        response_class=StreamingResponse,
        tags=["board"],
    )
    async def events() -> Response:
        sub = board.subscribe()
        if sub is None:
            return JSONResponse({"detail": "too many open event streams; try again later"}, status_code=503)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                for name in board.names():
                    for part in PARTS:
                        event = board.event(name, part)
                        yield sse(event, board.fragments.get(event) or render.fragment(board, name, part))
                while True:  # Starlette cancels this generator when the client goes
                    changed = await sub.changes(timeout=15.0)
                    if not changed:
                        yield ": keep-alive\n\n"
                    for event in changed:
                        yield sse(event, board.fragments.get(event, ""))
            finally:
                board.unsubscribe(sub)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @app.get(
        "/commits/{env}/{sha}", response_class=HTMLResponse, responses=not_found, include_in_schema=False
    )
    async def commit(env: EnvName, sha: Annotated[str, Path(pattern=SHA_PATTERN)]) -> HTMLResponse:
        history = board.envs[known(env)].source.history
        if not isinstance(history, LocalHistory):
            raise HTTPException(404, f"{env}: commits are read where the repository is hosted")
        try:
            text = await asyncio.to_thread(history.diff, env, sha)
        except SCMError:
            raise HTTPException(404, f"{env}: no commit {sha} in the repository") from None
        lines = []
        for line in text.splitlines():
            cls = "hunk" if line.startswith("@@") else "add" if line.startswith("+") else ""
            cls = "del" if line.startswith("-") and not line.startswith("---") else cls
            lines.append({"cls": cls, "text": line})
        return HTMLResponse(render.render("commit.html", env=env, sha=sha, lines=lines))

    action_responses: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "No token, or not a token the dashboard knows."},
        403: {"model": Problem, "description": "Actions are off, or the request came from another origin."},
        404: {"model": Problem, "description": "No such environment on this dashboard."},
        409: {"model": Problem, "description": "Nothing to approve or abort, or the environment is busy."},
        413: {"model": Problem, "description": "A request body (none is taken)."},
        503: {"model": Problem, "description": "Git (or GitHub) could not be written."},
    }

    async def act(
        env: str, action: Literal["approve", "abort"], request: Request, authorization: str | None
    ) -> Any:
        if not board.actions_enabled:
            raise HTTPException(
                403, "actions are off: start sluice ui with --token-file to enable approve and abort"
            )
        if not same_origin(request):
            raise HTTPException(403, "cross-origin request refused: act from the dashboard's own page")
        scheme, _, token = (authorization or "").partition(" ")
        who = board.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if who is None:
            raise HTTPException(
                401,
                "a valid token is needed: send `Authorization: Bearer <token>` (the page's Action token field)",
                headers={"WWW-Authenticate": 'Bearer realm="sluice ui"'},
            )
        known(env)
        try:
            return await board.act(env, action, who)
        except (RolloutError, Conflict) as e:
            raise HTTPException(409, str(e)) from None
        except SCMError as e:
            raise HTTPException(503, f"{env}: Git could not be written: {e}") from None

    @app.post(
        "/api/environments/{env}/approve",
        response_model=ActionResult,
        responses=action_responses,
        summary="Approve the step waiting for a human (as `sluice rollout approve`)",
        tags=["actions"],
    )
    async def approve(
        env: EnvName, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> ActionResult:
        result: ActionResult = await act(env, "approve", request, authorization)
        return result

    @app.post(
        "/api/environments/{env}/abort",
        response_model=ActionResult,
        responses=action_responses,
        summary="Abort the rollout and roll back now (as `sluice rollout abort`)",
        tags=["actions"],
    )
    async def abort(
        env: EnvName, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> ActionResult:
        result: ActionResult = await act(env, "abort", request, authorization)
        return result

    return app
