"""Every S3 client Sluice configures reaches the store the same way, over TLS: DVC in the pipeline steps, Argo's
S3 artifacts, the Argo Events MinIO source, and anything in the ConfigMaps or .dvc/config."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from pipelines.catalog import catalog
from pipelines.conventions import BUCKET_ENDPOINT, S3_ENDPOINT_URL, S3_INSECURE, S3_TLS

REPO = Path(__file__).resolve().parents[2]


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def s3_clients() -> list[tuple[str, str, bool]]:
    """(where, host:port, uses TLS) for every S3 client in the rendered objects, ConfigMaps and .dvc/config."""
    config_maps = [
        d for d in yaml.safe_load_all((REPO / "gitops" / "cluster" / "config.yaml").read_text()) if d
    ]
    clients = []
    for pipe in catalog():
        for path, node in _walk(pipe.build()):
            where = f"{pipe.filename}{path}"
            if "s3" in node and isinstance(node["s3"], dict):  # an Argo S3 artifact
                clients.append((where, node["s3"]["endpoint"], not node["s3"].get("insecure", False)))
            if "minio" in node and isinstance(node["minio"], dict):  # an Argo Events MinIO source
                for name, source in node["minio"].items():
                    clients.append((f"{where}.{name}", source["endpoint"], not source.get("insecure", False)))
            if node.get("name") == "AWS_ENDPOINT_URL":  # DVC's (boto's) endpoint
                if "value" in node:
                    url = urlparse(node["value"])
                else:
                    ref = node["valueFrom"]["configMapKeyRef"]
                    url = urlparse(
                        next(
                            c["data"][ref["key"]] for c in config_maps if c["metadata"]["name"] == ref["name"]
                        )
                    )
                clients.append((where, url.netloc, url.scheme == "https"))
    for config in config_maps:
        for key, value in config["data"].items():
            if "endpoint" in key or "s3" in key or "dvc" in key:
                url = urlparse(value)
                clients.append(
                    (
                        f"config.yaml {config['metadata']['namespace']} {key}",
                        url.netloc,
                        url.scheme == "https",
                    )
                )
    dvc = configparser.ConfigParser()
    dvc.read(REPO / ".dvc" / "config")
    for section in dvc.sections():
        if section.startswith("'remote"):
            options = dvc[section]
            if "endpointurl" in options:
                url = urlparse(options["endpointurl"])
                tls = url.scheme == "https" and options.get("ssl_verify", "true").lower() != "false"
                clients.append((f".dvc/config {section}", url.netloc, tls))
    return clients


def test_every_s3_client_uses_the_one_tls_setting() -> None:
    clients = s3_clients()
    sources = {where.split(".")[0] for where, _, _ in clients}
    assert {"batch-score", "batch-inputs", "train", "build-serving-image"} <= sources
    assert S3_TLS and not S3_INSECURE and urlparse(S3_ENDPOINT_URL).scheme == "https"
    wrong = [(where, host, tls) for where, host, tls in clients if (host, tls) != (BUCKET_ENDPOINT, S3_TLS)]
    assert wrong == [], wrong
