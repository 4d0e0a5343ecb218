"""scripts/retarget.py, the step copier runs after copying: the template's names become the answers in every
text file (whole names only), the S3 TLS setting reaches what is rendered from it, and the KServe target
swaps the environments' manifests."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import yaml
from template_repo import REPO

from doctor import names
from doctor.project import Project
from doctor.report import Status


def _retarget() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retarget", REPO / "scripts" / "retarget.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


retarget = _retarget()
ANSWERS = {
    "model_name": "churn-model",
    "image_registry": "registry.acme.io/ml",
    "git_host": "git.acme.io",
    "git_owner": "acme-corp",
    "git_repo": "platform",
    "staging_namespace": "ml-stage",
    "production_namespace": "ml-prod",
    "pipelines_namespace": "ml-pipelines",
    "system_namespace": "ml-system",
    "mlflow_tracking_uri": "https://mlflow.acme.io",
    "s3_endpoint": "s3.acme.io:443",
}


def test_names_are_replaced_whole_and_longest_first(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "repoURL: https://github.com/sluice-ml/sluice.git\n"
        "github-repository: sluice-ml/sluice\n"
        "image: ghcr.io/sluice-ml/sluice-serving@sha256:00\n"
        "uri: models:/sluice-classifier@champion\n"
        "service: sluice-classifier-m-aaaaaaaaaaaa-predictor.sluice-staging.svc\n"
        "namespace: sluice-pipelines\n"
        "policy: sluice-pipelines-pinned-images\n"
        "secret: sluice-mlflow\n"
        "mlflow: http://mlflow.sluice-system.svc:5000\n"
        "s3: https://minio.sluice-pipelines.svc:9000\n"
        "other: my-sluice-classifier and sluice-stagingX\n"
    )
    (tmp_path / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe sluice-classifier")

    changed = retarget.rename(tmp_path, ANSWERS)

    assert changed == [tmp_path / "a.yaml"]
    assert (tmp_path / "a.yaml").read_text() == (
        "repoURL: https://git.acme.io/acme-corp/platform.git\n"
        "github-repository: acme-corp/platform\n"
        "image: registry.acme.io/ml/sluice-serving@sha256:00\n"
        "uri: models:/churn-model@champion\n"
        "service: churn-model-m-aaaaaaaaaaaa-predictor.ml-stage.svc\n"
        "namespace: ml-pipelines\n"
        "policy: sluice-pipelines-pinned-images\n"  # a name of its own, not the namespace
        "secret: sluice-mlflow\n"
        "mlflow: https://mlflow.acme.io\n"
        "s3: https://s3.acme.io:443\n"
        "other: my-sluice-classifier and sluice-stagingX\n"
    )
    assert (tmp_path / "figure.png").read_bytes().endswith(b"sluice-classifier")


def test_the_defaults_change_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("image: ghcr.io/sluice-ml/sluice-serving\nname: sluice-classifier\n")
    assert retarget.rename(tmp_path, dict(retarget.TEMPLATE)) == []


def test_an_answer_is_inserted_literally(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("image: ghcr.io/sluice-ml/sluice-serving\n")
    retarget.rename(tmp_path, {"image_registry": r"reg.io/\g<0>\1"})
    assert (tmp_path / "a.yaml").read_text() == "image: reg.io/\\g<0>\\1/sluice-serving\n"


def test_s3_without_tls_reaches_every_rendered_client(tmp_path: Path) -> None:
    shutil.copytree(REPO / "pipelines" / "rendered", tmp_path / "pipelines" / "rendered")
    shutil.copy2(REPO / "pipelines" / "conventions.py", tmp_path / "pipelines" / "conventions.py")

    retarget.s3_tls(tmp_path, False)

    assert "S3_TLS = False" in (tmp_path / "pipelines" / "conventions.py").read_text()
    rendered = "".join(p.read_text() for p in (tmp_path / "pipelines" / "rendered").glob("*.yaml"))
    assert "https://minio" not in rendered and "http://minio.sluice-pipelines.svc:9000" in rendered
    assert "insecure: false" not in rendered and "insecure: true" in rendered
    assert "value: https://github.com/sluice-ml/sluice.git" in rendered  # not S3: keeps its TLS


def test_s3_without_tls_leaves_other_urls_alone(tmp_path: Path) -> None:
    rendered = tmp_path / "pipelines" / "rendered"
    rendered.mkdir(parents=True)
    (rendered / "a.yaml").write_text(
        "- name: AWS_ENDPOINT_URL\n  value: https://s3.acme.io:9443\n"
        "- name: REPO_URL\n  value: https://git.acme.io/ml/platform.git\n"
    )

    retarget.s3_tls(tmp_path, False, "s3.acme.io:9443")

    assert (rendered / "a.yaml").read_text() == (
        "- name: AWS_ENDPOINT_URL\n  value: http://s3.acme.io:9443\n"
        "- name: REPO_URL\n  value: https://git.acme.io/ml/platform.git\n"
    )


def test_kserve_replaces_each_environment_s_seldon_deployment(tmp_path: Path) -> None:
    shutil.copytree(REPO / "gitops", tmp_path / "gitops")
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "pipelines" / "rendered", tmp_path / "pipelines" / "rendered")
    shutil.copy2(REPO / "pipelines" / "conventions.py", tmp_path / "pipelines" / "conventions.py")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    retarget.rename(tmp_path, ANSWERS)

    retarget.kserve(tmp_path)

    for env, namespace in (("staging", "ml-stage"), ("production", "ml-prod")):
        folder = tmp_path / "gitops" / "environments" / env
        assert sorted(p.name for p in folder.iterdir()) == ["inferenceservice.yaml", "kustomization.yaml"]
        isvc = yaml.safe_load((folder / "inferenceservice.yaml").read_text())
        assert isvc["kind"] == "InferenceService"
        assert (isvc["metadata"]["name"], isvc["metadata"]["namespace"]) == ("churn-model", namespace)
        assert isvc["metadata"]["labels"]["sluice.dev/environment"] == env
        assert yaml.safe_load((folder / "kustomization.yaml").read_text())["namespace"] == namespace
    assert not (tmp_path / "gitops" / "examples").exists()
    found = names.check(Project(tmp_path))
    assert [f for f in found if f.status is Status.MISSING] == []

    from rollout.guardrails import check_manifest

    for env in ("staging", "production"):
        doc = yaml.safe_load(
            (tmp_path / "gitops" / "environments" / env / "inferenceservice.yaml").read_text()
        )
        assert check_manifest(doc) == []
