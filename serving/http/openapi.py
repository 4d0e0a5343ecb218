"""The OpenAPI 3.1 document of a predictor (served at /openapi.json, rendered by Swagger UI at /docs).

Written by hand around the pydantic schemas of the protocol codecs: the app routes without a framework, so
the document is the contract, and tests run schemathesis against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from serving.protocols import seldon, v2

if TYPE_CHECKING:
    from serving.http.app import PredictorApp

SWAGGER_HTML = """<!doctype html>
<html><head><title>Sluice predictor</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""

_SCHEMAS: list[type[BaseModel]] = [
    seldon.SeldonMessage,
    seldon.FeedbackMessage,
    seldon.SeldonError,
    v2.InferenceRequest,
    v2.InferenceResponse,
    v2.ModelMetadata,
    v2.ErrorResponse,
]


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _SCHEMAS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document(app: PredictorApp) -> dict[str, Any]:
    names = app.predictor.feature_names
    row = [0.0] * len(names)
    seldon_errors = {
        "400": _json(_ref("SeldonError"), "Malformed request; the message names the problem."),
        "413": _json(_ref("SeldonError"), "Body larger than the limit."),
    }
    v2_errors = {
        "400": _json(_ref("ErrorResponse"), "Malformed request; the message names the problem."),
        "404": _json(_ref("ErrorResponse"), "Unknown model name or version."),
        "413": _json(_ref("ErrorResponse"), "Body larger than the limit."),
    }
    seldon_example = {"data": {"names": names, "ndarray": [row]}}
    v2_example = {"inputs": [{"name": "input", "shape": [1, len(names)], "datatype": "FP64", "data": [row]}]}
    model_path = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "example": app.name,
    }
    version_param = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}

    def predict_op(summary: str) -> dict[str, Any]:
        return {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SeldonMessage"), "example": seldon_example}},
            },
            "responses": {
                "200": _json(_ref("SeldonMessage"), "Class probabilities per row."),
                **seldon_errors,
            },
        }

    def infer_op(params: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "summary": "Open Inference Protocol v2 inference",
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("InferenceRequest"), "example": v2_example}},
            },
            "responses": {"200": _json(_ref("InferenceResponse"), "Labels and probabilities."), **v2_errors},
        }

    def get_op(
        summary: str, response: dict[str, Any], params: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        op: dict[str, Any] = {"summary": summary, "responses": {"200": response}}
        if params:
            op["parameters"] = params
            op["responses"]["404"] = v2_errors["404"]
        return {"get": op}

    any_json = _json({"type": "object"}, "OK")
    feedback = {
        "summary": "Seldon v1 feedback: reward, or truth scored against the response",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("FeedbackMessage")}},
        },
        "responses": {"200": _json(_ref("SeldonMessage"), "Feedback counted."), **seldon_errors},
    }
    paths: dict[str, Any] = {
        "/api/v1.0/predictions": {"post": predict_op("Seldon v1 prediction")},
        "/predict": {"post": predict_op("Seldon v1 prediction (alias)")},
        "/api/v1.0/feedback": {"post": feedback},
        "/health/ping": get_op(
            "Liveness", {"description": "pong", "content": {"text/plain": {"schema": {"type": "string"}}}}
        ),
        "/health/status": get_op("Health: the model answers a probe row", any_json),
        "/metadata": get_op("Model metadata", _json(_ref("ModelMetadata"), "Model metadata")),
        "/v2": get_op("Server metadata", any_json),
        "/v2/health/live": get_op("Liveness", any_json),
        "/v2/health/ready": get_op("Readiness", any_json),
        "/v2/models/{name}": get_op(
            "Model metadata", _json(_ref("ModelMetadata"), "Model metadata"), [model_path]
        ),
        "/v2/models/{name}/ready": get_op("Model readiness", any_json, [model_path]),
        "/v2/models/{name}/infer": {"post": infer_op([model_path])},
        "/v2/models/{name}/versions/{version}": get_op(
            "Model metadata", _json(_ref("ModelMetadata"), "Model metadata"), [model_path, version_param]
        ),
        "/v2/models/{name}/versions/{version}/ready": get_op(
            "Model readiness", any_json, [model_path, version_param]
        ),
        "/v2/models/{name}/versions/{version}/infer": {"post": infer_op([model_path, version_param])},
        "/metrics": get_op(
            "Prometheus metrics",
            {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"Sluice predictor: {app.name}",
            "version": app.version,
            "description": (
                f"Model {app.predictor.name} digest {app.predictor.digest}; {len(names)} features: "
                + ", ".join(names)
            ),
        },
        "paths": paths,
        "components": {"schemas": _components()},
    }
