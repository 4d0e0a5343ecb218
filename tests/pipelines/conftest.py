"""A real HTTP server on 127.0.0.1 that speaks the Argo Server's submit endpoint and checks request shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "test-token-not-a-secret"


@dataclass
class FakeArgoServer:
    """Records what it received; answers like Argo Server 3.x (grpc-gateway JSON errors: code + message)."""

    url: str = ""
    token: str = TOKEN
    requests: list[dict[str, Any]] = field(default_factory=list)
    templates: set[str] = field(
        default_factory=lambda: {"train", "build-serving-image", "promote", "batch-score"}
    )
    # What GET /api/v1/workflows/{ns}/{name} answers, in turn (the last one repeats): Argo's status shapes.
    statuses: list[dict[str, Any]] = field(default_factory=lambda: [{"phase": "Succeeded"}])
    gets: int = 0
    # Faults for the next GETs, in turn: "drop" (close the connection without answering) or a status code.
    faults: list[str] = field(default_factory=list)
    answered: int = 0  # GETs answered with a status (the index into `statuses`)


def _handler(state: FakeArgoServer) -> type[BaseHTTPRequestHandler]:
    from hera.workflows.models import WorkflowSubmitRequest
    from pydantic import ValidationError

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if state.faults:
                fault = state.faults.pop(0)
                state.gets += 1
                if fault == "drop":
                    self.close_connection = True
                    return
                return self._answer(int(fault), {"code": 14, "message": "upstream connect error"})
            parts = self.path.strip("/").split("/")
            if parts[:3] != ["api", "v1", "workflows"] or len(parts) != 5:
                return self._answer(404, {"code": 5, "message": f"Not Found: {self.path}"})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._answer(401, {"code": 16, "message": "token not valid"})
            status = state.statuses[min(state.answered, len(state.statuses) - 1)]
            state.gets += 1
            state.answered += 1
            self._answer(200, {"metadata": {"name": parts[4], "namespace": parts[3]}, "status": status})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": raw.decode()})
            parts = self.path.strip("/").split("/")
            if parts[:3] != ["api", "v1", "workflows"] or len(parts) != 5 or parts[4] != "submit":
                return self._answer(404, {"code": 5, "message": f"Not Found: {self.path}"})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._answer(401, {"code": 16, "message": "token not valid"})
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                return self._answer(400, {"code": 3, "message": "expected JSON"})
            try:
                request = WorkflowSubmitRequest.model_validate_json(raw)
            except ValidationError as e:
                return self._answer(400, {"code": 3, "message": str(e)})
            if request.namespace != parts[3] or request.resource_kind != "WorkflowTemplate":
                return self._answer(400, {"code": 3, "message": "namespace or resourceKind does not match"})
            if request.resource_name not in state.templates:
                return self._answer(
                    404,
                    {
                        "code": 5,
                        "message": f'workflowtemplates.argoproj.io "{request.resource_name}" not found',
                    },
                )
            options = request.submit_options
            parameters = [
                {"name": k, "value": v}
                for k, _, v in (p.partition("=") for p in (options.parameters if options else None) or [])
            ]
            self._answer(
                200,
                {
                    "metadata": {
                        "name": f"{request.resource_name}-x7k2p",
                        "generateName": f"{request.resource_name}-",
                        "namespace": parts[3],
                        "labels": {"workflows.argoproj.io/workflow-template": request.resource_name},
                    },
                    "spec": {
                        "workflowTemplateRef": {"name": request.resource_name},
                        "arguments": {"parameters": parameters},
                    },
                    "status": {},
                },
            )

    return Handler


@pytest.fixture
def argo_server() -> Iterator[FakeArgoServer]:
    state = FakeArgoServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
