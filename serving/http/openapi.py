"""The OpenAPI 3.1 document of a predictor (served at /openapi.json, rendered by Swagger UI at /docs).

Written for the model it serves: a row is exactly its features (numbers of magnitude at most 2**64, so
the model's float32 arithmetic cannot overflow), names are its feature names, labels its classes. Whatever the document calls valid, the server
accepts; whatever it calls invalid, the server refuses with a 4xx it declares (the schemathesis run in the
tests holds both directions with every check on). Where JSON Schema cannot say a rule (columns of one
length, a tensor's shape against its values, truth rows against response rows), the document shows the
one-row form of a request and the operation's description says what else the server takes.
Swagger UI comes from the installed swagger-ui-bundle-v2 package (Apache-2.0): /docs works offline.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.core.validation import MAX_MAGNITUDE

if TYPE_CHECKING:
    from serving.http.app import PredictorApp

# Paths relative to /docs, so the page also works under Seldon's ingress prefix /seldon/<ns>/<deployment>/.
SWAGGER_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sluice predictor</title>
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
<link rel="stylesheet" href="docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""
DOCS_ASSETS: dict[str, tuple[str, bytes]] = {
    "/docs": ("", b"text/html; charset=utf-8"),
    "/docs/swagger-ui.css": ("swagger-ui.css", b"text/css; charset=utf-8"),
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js", b"text/javascript; charset=utf-8"),
    "/docs/favicon-32x32.png": ("favicon-32x32.png", b"image/png"),
}


@functools.cache
def docs_asset(path: str) -> tuple[bytes, bytes]:
    """The bytes and content type of a /docs path."""
    file, content_type = DOCS_ASSETS[path]
    if not file:
        return SWAGGER_HTML.encode(), content_type
    from swagger_ui_bundle import swagger_ui_path

    return (swagger_ui_path / file).read_bytes(), content_type


NUMBER = {"type": "number", "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
INT_RANGES: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(t).min), int(np.iinfo(t).max))
    for name, t in (("INT32", np.int32), ("INT64", np.int64))
}
ANY: dict[str, Any] = {"description": "Any JSON value; not read."}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _array(items: Any, n: int | None = None, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": items, **more}
    if n is not None:
        schema["minItems"] = schema["maxItems"] = n
    return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# request schemas --------------------------------------------------------------------------------------
def _request_schemas(features: list[str], classes: list[int]) -> dict[str, Any]:
    n = len(features)
    row = _array(NUMBER, n, description=f"One row: the {n} feature values in signature order.")
    record = {
        "type": "object",
        "description": "One row as a record {feature: value}.",
        "properties": dict.fromkeys(features, NUMBER),
        "required": features,
        "additionalProperties": False,
    }
    names = {
        "type": ["array", "null"],
        "description": "The order of the row's values: every feature once (null or [] for signature order).",
        "items": {"enum": features},
        "uniqueItems": True,
        "maxItems": n,
        "anyOf": [{"maxItems": 0}, {"minItems": n}, {"type": "null"}],
    }
    shape_2d = {"type": "array", "prefixItems": [{"const": 1}, {"const": n}], "items": False, "minItems": 2}
    shape_1d = {"type": "array", "prefixItems": [{"const": n}], "items": False, "minItems": 1}
    tensor = {
        "type": "object",
        "required": ["shape", "values"],
        "properties": {"shape": {"anyOf": [shape_2d, shape_1d]}, "values": row},
    }
    meta = {
        "type": ["object", "null"],
        "description": "Echoed in the answer: puid, tags, routing and requestPath (others are dropped).",
        "properties": {"puid": ANY, "tags": ANY, "routing": ANY, "requestPath": ANY},
    }

    def seldon_request(most: int | None) -> dict[str, Any]:
        """Rows in data.ndarray, data.tensor (one row) or jsonData; at most `most` rows in ndarray/jsonData."""
        rows = _array(row, minItems=1) if most is None else _array(row, most)
        records = _array(record, minItems=1) if most is None else _array(record, most)
        data = {
            "type": "object",
            "properties": {"names": names, "ndarray": {"anyOf": [rows, row]}, "tensor": tensor},
            "oneOf": [{"required": ["ndarray"]}, {"required": ["tensor"]}],
        }
        return {
            "type": "object",
            "description": "Rows in `data.ndarray` or `data.tensor`, or records in `jsonData`.",
            "properties": {"data": data, "jsonData": {"anyOf": [records, record, rows, row]}, "meta": meta},
            "oneOf": [{"required": ["data"]}, {"required": ["jsonData"]}],
        }

    def ndarray_message(ndarray: dict[str, Any], **more: Any) -> dict[str, Any]:
        """A SeldonMessage whose data.ndarray is given."""
        data = {"type": "object", "required": ["ndarray"], "properties": {"ndarray": ndarray, **more}}
        return {"type": "object", "required": ["data"], "properties": {"data": data}}

    predict = seldon_request(None)
    # Feedback, documented for one row: truth and response rows must agree, which JSON Schema cannot say.
    one_row_request = seldon_request(1)
    scores = _array({"type": "number"}, len(classes), description="The class probabilities the model gave.")
    response = ndarray_message(_array(scores, 1), names=_array({"enum": [str(c) for c in classes]}))
    label = {"enum": classes}
    truth = ndarray_message({"anyOf": [_array(_array(label, 1), 1), _array(label, 1)]})

    def given(part: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": [part], "properties": {part: schema}}

    feedback = {
        "type": "object",
        "properties": {
            "request": {"type": ["object", "null"]},
            "response": {"type": ["object", "null"]},
            "truth": _nullable(truth),
            "reward": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        },
        # A truth is scored against the response; with no response, a reward is taken as given, else the
        # truth is scored against what the model predicts for the request. Without a truth, the request and
        # the response are the client's record and are not read.
        "if": given("truth", {"type": "object"}),
        "then": {
            "anyOf": [
                given("response", response),
                {"not": given("response", {"type": "object"}), **given("reward", {"type": "number"})},
                {"not": given("response", {"type": "object"}), **given("request", one_row_request)},
            ]
        },
    }
    v2_inputs = []
    for datatype in ("FP32", "FP64", "INT32", "INT64"):
        if datatype in INT_RANGES:
            low, high = INT_RANGES[datatype]
            value: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
        else:
            value = NUMBER
        v2_inputs.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string", "not": {"enum": features}},
                    "shape": {"anyOf": [shape_2d, shape_1d]},
                    "datatype": {"const": datatype},
                    "data": {"anyOf": [_array(value, n), _array(_array(value, n), 1)]},
                    "parameters": ANY,
                },
            }
        )
    infer = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "parameters": ANY,
            "inputs": _array({"oneOf": v2_inputs}, 1),
            "outputs": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"enum": ["label", "probabilities"]}, "parameters": ANY},
                },
            },
        },
    }
    return {
        "PredictRequest": predict,
        "FeedbackRequest": feedback,
        "InferenceRequest": infer,
    }


# answer schemas ---------------------------------------------------------------------------------------
def _answer_schemas() -> dict[str, Any]:
    tags = {"type": "object", "additionalProperties": True}
    meta = {
        "type": "object",
        "properties": {
            "puid": {"type": "string"},
            "tags": tags,
            "routing": {"type": "object"},
            "requestPath": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    matrix = _array(_array({"type": "number"}))
    return {
        "PredictAnswer": {
            "type": "object",
            "required": ["meta"],
            "properties": {
                "data": {
                    "type": "object",
                    "required": ["names"],
                    "properties": {
                        "names": _array({"type": "string"}, description="The class labels."),
                        "ndarray": matrix,
                        "tensor": {
                            "type": "object",
                            "required": ["shape", "values"],
                            "properties": {
                                "shape": _array({"type": "integer"}),
                                "values": _array({"type": "number"}),
                            },
                        },
                    },
                },
                "jsonData": {
                    "type": "object",
                    "required": ["labels", "probabilities", "classes"],
                    "properties": {
                        "labels": _array({"type": "integer"}),
                        "probabilities": matrix,
                        "classes": _array({"type": "integer"}),
                    },
                },
                "meta": meta,
            },
        },
        "FeedbackAnswer": {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {
                "data": {"type": "object"},
                "meta": {
                    "type": "object",
                    "properties": {
                        "tags": {
                            "type": "object",
                            "required": ["reward"],
                            "properties": {
                                "reward": {"type": "number", "minimum": 0, "maximum": 1},
                                "correct": {"type": "integer", "minimum": 0},
                            },
                        }
                    },
                },
            },
        },
        "SeldonError": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {
                    "type": "object",
                    "required": ["code", "info", "reason", "status"],
                    "properties": {
                        "code": {"type": "integer"},
                        "info": {"type": "string", "description": "What was wrong: the field and the value."},
                        "reason": {"type": "string"},
                        "status": {"const": "FAILURE"},
                    },
                }
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": _array(
                    {
                        "type": "object",
                        "required": ["name", "shape", "datatype", "data"],
                        "properties": {
                            "name": {"enum": ["label", "probabilities"]},
                            "shape": _array({"type": "integer"}),
                            "datatype": {"enum": ["INT64", "FP32", "FP64"]},
                            "data": _array({"type": "number"}),
                        },
                    }
                ),
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": _array({"type": "string"}),
                "platform": {"type": "string"},
                "inputs": _array({"type": "object"}),
                "outputs": _array({"type": "object"}),
            },
        },
        "ErrorResponse": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "What was wrong: the field and the value."}
            },
        },
    }


# the document -----------------------------------------------------------------------------------------
def document(app: PredictorApp) -> dict[str, Any]:
    names = app.predictor.feature_names
    row = [0.0] * len(names)

    def errors(schema: str, *statuses: int) -> dict[str, Any]:
        what = {
            400: "Malformed request; the message names the field and the value.",
            404: "No such model, version or deployment here.",
            413: "Body larger than the limit.",
            415: "A content type the server does not read (multipart/form-data).",
            500: "Internal error: a generic message with a reference; the details are in the server's log.",
        }
        return {str(s): _json(_ref(schema), what[s]) for s in statuses}

    def body(schema: str, example: Any) -> dict[str, Any]:
        return {
            "required": True,
            "content": {"application/json": {"schema": _ref(schema), "example": example}},
        }

    seldon_post = ("SeldonError", 400, 404, 413, 415, 500)
    forms = (
        " Seldon's microservice form is taken too: `application/x-www-form-urlencoded` with the field `json=`"
        " holding this JSON (seldon-core's `SeldonClient(gateway=...).microservice(...)` sends it)."
    )
    predict = {
        "summary": "Seldon v1 prediction",
        "description": (
            "The document shows one-row requests exactly; the server also takes many rows: `data.ndarray`"
            " with any number of rows, `data.tensor` of shape [rows, features], `jsonData` as columns"
            " {feature: [values]} of one length or {ndarray, names}." + forms
        ),
        "requestBody": body("PredictRequest", {"data": {"names": names, "ndarray": [row]}}),
        "responses": {
            "200": _json(_ref("PredictAnswer"), "Class probabilities per row."),
            **errors(*seldon_post),
        },
    }
    feedback = {
        "summary": "Seldon v1 feedback: a reward in [0, 1], or a truth scored against the response",
        "description": (
            "A truth is scored against the `response` (its most probable classes), or, without one, against"
            " what the model predicts for the `request`. No reward and no truth counts 0, as under Seldon."
            " The document shows one-row messages; truth, response and request may hold many rows as long as"
            " truth and the message it is scored against have as many." + forms
        ),
        "requestBody": body(
            "FeedbackRequest",
            {"response": {"data": {"ndarray": [[0.1, 0.9]]}}, "truth": {"data": {"ndarray": [[1]]}}},
        ),
        "responses": {"200": _json(_ref("FeedbackAnswer"), "Feedback counted."), **errors(*seldon_post)},
    }
    model_param = {"name": "name", "in": "path", "required": True, "schema": {"enum": sorted(app.names)}}
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"enum": sorted(app.versions)},
    }
    namespace_param = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
    deployment_schema = {"enum": [app.deployment]} if app.deployment else {"type": "string"}
    deployment_param = {"name": "deployment", "in": "path", "required": True, "schema": deployment_schema}
    v2_errors = errors("ErrorResponse", 400, 404, 413, 500)

    def infer(params: list[dict[str, Any]]) -> dict[str, Any]:
        example = {"inputs": [{"name": "input", "shape": [1, len(names)], "datatype": "FP64", "data": row}]}
        return {
            "post": {
                "summary": "Open Inference Protocol v2 inference",
                "description": (
                    "The document shows one input holding one row; the server also takes shape [rows, features]"
                    " with rows x features values (flat or nested), and one input per feature named after it."
                ),
                "parameters": params,
                "requestBody": body("InferenceRequest", example),
                "responses": {
                    "200": _json(_ref("InferenceResponse"), "Labels and probabilities."),
                    **v2_errors,
                },
            }
        }

    def get(
        summary: str, response: dict[str, Any], params: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        op: dict[str, Any] = {"summary": summary, "responses": {"200": response}}
        if params:
            op["parameters"] = params
            op["responses"].update(errors("ErrorResponse", 404))
        return {"get": op}

    def obj(description: str, **properties: Any) -> dict[str, Any]:
        return _json({"type": "object", "required": list(properties), "properties": properties}, description)

    text = {"description": "Text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    metadata = _json(_ref("ModelMetadata"), "Model metadata")
    boolean = {"type": "boolean"}
    paths: dict[str, Any] = {}
    # Each Seldon operation at its four addresses: v1.0, v0.1, the microservice's, and the ingress path.
    for name, op, microservice in (
        ("predictions", predict, "/predict"),
        ("feedback", feedback, "/send-feedback"),
    ):
        paths[f"/api/v1.0/{name}"] = {"post": op}
        paths[f"/api/v0.1/{name}"] = {"post": {**op, "summary": f"{op['summary']} (v0.1 path)"}}
        paths[microservice] = {"post": {**op, "summary": f"{op['summary']} (the microservice's path)"}}
        paths[f"/seldon/{{namespace}}/{{deployment}}/api/v1.0/{name}"] = {
            "post": {
                **op,
                "summary": f"{op['summary']} (the ingress path of SeldonClient's gateway istio)",
                "parameters": [namespace_param, deployment_param],
            }
        }
    paths |= {
        "/health/ping": get("Liveness", text),
        "/health/status": get(
            "Health: the model answers a probe row",
            obj("OK", jsonData={"type": "object"}, meta={"type": "object"}),
        ),
        "/metadata": get("Model metadata", metadata),
        "/v2": get(
            "Server metadata", obj("Server metadata", name={"type": "string"}, version={"type": "string"})
        ),
        "/v2/health/live": get("Liveness", obj("Live", live=boolean)),
        "/v2/health/ready": get("Readiness", obj("Ready", ready=boolean)),
        "/v2/models/{name}": get("Model metadata", metadata, [model_param]),
        "/v2/models/{name}/ready": get("Model readiness", obj("Ready", ready=boolean), [model_param]),
        "/v2/models/{name}/infer": infer([model_param]),
        "/v2/models/{name}/versions/{version}": get("Model metadata", metadata, [model_param, version_param]),
        "/v2/models/{name}/versions/{version}/ready": get(
            "Model readiness", obj("Ready", ready=boolean), [model_param, version_param]
        ),
        "/v2/models/{name}/versions/{version}/infer": infer([model_param, version_param]),
        "/metrics": get("Prometheus metrics", text),
        "/prometheus": get("Prometheus metrics (the path Seldon's operator scrapes)", text),
    }
    classes = [int(c) for c in app.classes]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"Sluice predictor: {app.name}",
            "version": app.version,
            "description": (
                f"Model {app.predictor.name} digest {app.predictor.digest}; {len(names)} features: "
                + ", ".join(names)
                + f"; classes {classes}. Feature values are numbers with |x| <= 2**64 ({MAX_MAGNITUDE:.6g}: larger"
                " ones overflow the model's float32 arithmetic); NaN, infinities and booleans are refused."
            ),
        },
        "paths": paths,
        "components": {"schemas": {**_request_schemas(list(names), classes), **_answer_schemas()}},
    }
