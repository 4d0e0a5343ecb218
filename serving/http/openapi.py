"""The OpenAPI 3.1 document of a predictor (served at /openapi.json, rendered by Swagger UI at /docs).

Written for the model it serves: a row is exactly its features (numbers of magnitude at most 2**64, so
the model's float32 arithmetic cannot overflow; for a model with typed features, each position its
feature's type: a number, a boolean, one of its categories, or null where it may be missing), names are its
feature names, labels its classes (or the predicted value of a regression). Whatever the document calls valid, the server
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

from serving.core.validation import MAX_MAGNITUDE, PLAIN, FeatureRule

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


def _value(rule: FeatureRule) -> dict[str, Any]:
    """What one feature's value may be in a JSON row."""
    if rule.type == "numeric":
        schema: dict[str, Any] = NUMBER
    elif rule.type == "boolean":
        schema = {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]}
    else:
        schema = {"enum": list(rule.categories)}
    return _nullable(schema) if rule.nullable else schema


def _number_value(rule: FeatureRule) -> dict[str, Any] | None:
    """What one feature's value may be in a tensor of numbers (None: it cannot be a number)."""
    if rule.type == "categorical":
        return None
    return NUMBER if rule.type == "numeric" else {"enum": [0, 1]}


def _positions(items: list[dict[str, Any]], description: str) -> dict[str, Any]:
    n = len(items)
    return {"type": "array", "prefixItems": items, "items": False, "minItems": n, "description": description}


# request schemas --------------------------------------------------------------------------------------
def _request_schemas(
    features: list[str],
    classes: list[Any],
    rules: list[FeatureRule] | None = None,
    regression: bool = False,
) -> dict[str, Any]:
    n = len(features)
    rules = rules or [PLAIN] * n
    plain = all(r == PLAIN for r in rules)
    about = f"One row: the {n} feature values in signature order."
    row = _array(NUMBER, n, description=about) if plain else _positions([_value(r) for r in rules], about)
    record = {
        "type": "object",
        "description": "One row as a record {feature: value}.",
        "properties": {f: _value(r) for f, r in zip(features, rules, strict=True)},
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
    if not plain:
        # Each position of a row has its own feature's schema, so the document shows signature order; the
        # server takes the features in any order `names` gives (JSON Schema cannot tie one to the other).
        names = {
            "type": ["array", "null"],
            "description": "The features in signature order (the server also takes any other order).",
            "anyOf": [{"const": features}, {"type": "array", "maxItems": 0}, {"type": "null"}],
        }
    shape_2d = {"type": "array", "prefixItems": [{"const": 1}, {"const": n}], "items": False, "minItems": 2}
    shape_1d = {"type": "array", "prefixItems": [{"const": n}], "items": False, "minItems": 1}
    numbers = [_number_value(r) for r in rules]
    tensor: Any = (
        {
            "type": "object",
            "required": ["shape", "values"],
            "properties": {
                "shape": {"anyOf": [shape_2d, shape_1d]},
                "values": row if plain else _positions([v for v in numbers if v is not None], about),
            },
        }
        if all(v is not None for v in numbers)
        else False  # a tensor holds numbers: a model with text features takes rows or records
    )
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
    if regression:
        scores = _array(NUMBER, 1, description="The value the model predicted.")
        response = ndarray_message(_array(scores, 1), names=_array({"enum": ["prediction"]}))
        truth = ndarray_message({"anyOf": [_array(_array(NUMBER, 1), 1), _array(NUMBER, 1)]})
    else:
        scores = _array(
            {"type": "number"}, len(classes), description="The class probabilities the model gave."
        )
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
    inputs: dict[str, Any] = _array({"oneOf": v2_inputs}, 1)
    if not plain:  # one tensor per feature, each once, in any order
        tensors = [_feature_tensor(f, r) for f, r in zip(features, rules, strict=True)]
        inputs = {
            **_array({"oneOf": tensors}, n),
            "allOf": [
                {"contains": {"type": "object", "required": ["name"], "properties": {"name": {"const": f}}}}
                for f in features
            ],
        }
    outputs = ["prediction"] if regression else ["label", "probabilities"]
    infer = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "parameters": ANY,
            "inputs": inputs,
            "outputs": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"enum": outputs}, "parameters": ANY},
                },
            },
        },
    }
    return {
        "PredictRequest": predict,
        "FeedbackRequest": feedback,
        "InferenceRequest": infer,
    }


def _feature_tensor(name: str, rule: FeatureRule) -> dict[str, Any]:
    """One feature's v2 input, holding one row: its datatypes, and its value as the feature's type."""
    one = {"anyOf": [{"const": [1]}, {"const": [1, 1]}]}
    if rule.type == "numeric":
        kinds = [(d, NUMBER) for d in ("FP32", "FP64")] + [
            (d, {"type": "integer", "minimum": INT_RANGES[d][0], "maximum": INT_RANGES[d][1]})
            for d in ("INT32", "INT64")
        ]
    elif rule.type == "boolean":
        kinds = [("BOOL", {"type": "boolean"})]
    else:
        kinds = [("BYTES", {"enum": list(rule.categories)})]
    variants = []
    for datatype, value in kinds:
        item = _nullable(value) if rule.nullable else value
        variants.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"const": name},
                    "shape": one,
                    "datatype": {"const": datatype},
                    "data": {"anyOf": [_array(item, 1), _array(_array(item, 1), 1)]},
                    "parameters": ANY,
                },
            }
        )
    return variants[0] if len(variants) == 1 else {"oneOf": variants}


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
                        "names": _array(
                            {"type": "string"}, description="The class labels (a regression: `prediction`)."
                        ),
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
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["labels", "probabilities", "classes"],
                            "properties": {
                                "labels": _array({"type": ["integer", "string"]}),
                                "probabilities": matrix,
                                "classes": _array({"type": ["integer", "string"]}),
                            },
                        },
                        {
                            "type": "object",
                            "required": ["predictions"],
                            "description": "A regression's predicted values.",
                            "properties": {"predictions": _array({"type": "number"})},
                        },
                    ]
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
                                "mean_abs_error": {"type": "number", "minimum": 0},
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
                            "name": {"enum": ["label", "probabilities", "prediction"]},
                            "shape": _array({"type": "integer"}),
                            "datatype": {"enum": ["INT64", "BYTES", "FP32", "FP64"]},
                            "data": _array({"type": ["number", "string"]}),
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
    rules = app.predictor.features.rules
    plain = app.predictor.features.plain
    row: list[Any] = [_example(r) for r in rules]

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
    if app.regression:
        feedback_example: dict[str, Any] = {
            "response": {"data": {"names": ["prediction"], "ndarray": [[150.0]]}},
            "truth": {"data": {"ndarray": [[162.0]]}},
        }
    else:
        feedback_example = {
            "response": {"data": {"ndarray": [[1.0 / len(app.classes)] * len(app.classes)]}},
            "truth": {"data": {"ndarray": [[app.classes[-1]]]}},
        }
    feedback = {
        "summary": "Seldon v1 feedback: a reward in [0, 1], or a truth scored against the response",
        "description": (
            "A truth is scored against the `response` (its most probable classes), or, without one, against"
            " what the model predicts for the `request`. No reward and no truth counts 0, as under Seldon."
            " The document shows one-row messages; truth, response and request may hold many rows as long as"
            " truth and the message it is scored against have as many."
            + (
                " A regression's truth is the true value: a row scores 1 - |truth - prediction| / (the target's"
                " range), at least 0."
                if app.regression
                else ""
            )
            + forms
        ),
        "requestBody": body("FeedbackRequest", feedback_example),
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
        if plain:
            example: dict[str, Any] = {
                "inputs": [{"name": "input", "shape": [1, len(names)], "datatype": "FP64", "data": row}]
            }
            about = (
                "The document shows one input holding one row; the server also takes shape [rows, features]"
                " with rows x features values (flat or nested), and one input per feature named after it."
            )
        else:
            datatype = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
            example = {
                "inputs": [
                    {"name": n, "shape": [1], "datatype": datatype[r.type], "data": [v]}
                    for n, r, v in zip(names, rules, row, strict=True)
                ]
            }
            about = (
                "One input per feature, named after it: numbers (FP32, FP64, INT32, INT64), booleans (BOOL) or"
                " categories (BYTES); null where a feature may be missing. The document shows one row; the"
                " server takes shape [rows] (or [rows, 1]) with as many values in each input."
            )
        return {
            "post": {
                "summary": "Open Inference Protocol v2 inference",
                "description": about,
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
    classes = list(app.classes)
    answers = "a regression: the predicted value per row" if app.regression else f"classes {classes}"
    typed = (
        ""
        if plain
        else (
            " Typed features: "
            + ", ".join(f"{n} ({_about(r)})" for n, r in zip(names, rules, strict=True) if r != PLAIN)
            + "; a category the model does not list is refused with a 400."
        )
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"Sluice predictor: {app.name}",
            "version": app.version,
            "description": (
                f"Model {app.predictor.name} digest {app.predictor.digest}; {len(names)} features: "
                + ", ".join(names)
                + f"; {answers}. Numeric feature values are numbers with |x| <= 2**64 ({MAX_MAGNITUDE:.6g}: larger"
                " ones overflow the model's float32 arithmetic); NaN, infinities and booleans are refused."
                + typed
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {
                **_request_schemas(list(names), classes, list(rules), app.regression),
                **_answer_schemas(),
            }
        },
    }


def _example(rule: FeatureRule) -> Any:
    if rule.type == "categorical":
        return rule.categories[0]
    return False if rule.type == "boolean" else 0.0


def _about(rule: FeatureRule) -> str:
    kind = "one of " + ", ".join(rule.categories) if rule.type == "categorical" else rule.type
    return kind + (", may be null" if rule.nullable else "")
