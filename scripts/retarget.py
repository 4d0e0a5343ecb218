"""Make a copy of this template name your project: run by copier after it copies the files (copier.yml,
`_tasks`), with the answers as JSON. Every file stays plain and complete (what is in Git is what Argo CD
applies): the template's own names (model, registry, repository, namespaces, endpoints) are replaced by the
answers in every text file, and the chosen traffic target's manifests take the environments' place.

The same replacement runs when `copier update` renders the old and the new release, so a project's own edits
and a later release meet as an ordinary three-way merge. Standard library only (plus PyYAML, which copier
brings): it runs on the Python that runs copier, before the project has a virtualenv.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

# The template's own values: what a project generated with every default keeps.
TEMPLATE = {
    "model_name": "sluice-classifier",
    "image_registry": "ghcr.io/sluice-ml",
    "git_host": "github.com",
    "git_owner": "sluice-ml",
    "git_repo": "sluice",
    "staging_namespace": "sluice-staging",
    "production_namespace": "sluice-production",
    "pipelines_namespace": "sluice-pipelines",
    "system_namespace": "sluice-system",
    "mlflow_tracking_uri": "http://mlflow.sluice-system.svc:5000",
    "s3_endpoint": "minio.sluice-pipelines.svc:9000",
    "s3_tls": True,
    "data_source": "builtin:breast_cancer",
    "traffic_target": "seldon",
}
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
MAX_BYTES = 5_000_000
ENVIRONMENTS = ("staging", "production")


def _bounded(name: str, prefix_of_names: bool = False) -> re.Pattern[str]:
    """`name` as a whole token: not inside a longer name (`sluice-pipelines-pinned-images` keeps its name),
    unless names are made from it (the model's: KServe's `<model>-<predictor>-predictor` Services)."""
    after = r"(?!\w)" if prefix_of_names else r"(?![\w-])"
    return re.compile(rf"(?<![\w-]){re.escape(name)}{after}")


def replacements(answers: dict[str, object]) -> list[tuple[re.Pattern[str], str]]:
    """Ordered (pattern, replacement): longer names first, so a URL is replaced whole before its parts."""
    a = {**TEMPLATE, **answers}
    t = TEMPLATE
    old_repo = f"{t['git_host']}/{t['git_owner']}/{t['git_repo']}"
    new_repo = f"{a['git_host']}/{a['git_owner']}/{a['git_repo']}"
    pairs: list[tuple[str, str, bool | str]] = [  # (old, new, as a whole token; "prefix": or a name's prefix)
        (f"https://{old_repo}.git", f"https://{new_repo}.git", False),
        (old_repo, new_repo, True),
        (str(t["image_registry"]), str(a["image_registry"]), False),
        (f"{t['git_owner']}/{t['git_repo']}", f"{a['git_owner']}/{a['git_repo']}", True),
        (str(t["mlflow_tracking_uri"]), str(a["mlflow_tracking_uri"]), False),
        (str(t["s3_endpoint"]), str(a["s3_endpoint"]), False),
        (str(t["model_name"]), str(a["model_name"]), "prefix"),
    ]
    pairs += [
        (str(t[k]), str(a[k]), True)
        for k in ("staging_namespace", "production_namespace", "pipelines_namespace", "system_namespace")
    ]
    out = []
    for old, new, whole in pairs:
        if old != new:
            pattern = _bounded(old, whole == "prefix") if whole else re.compile(re.escape(old))
            out.append((pattern, new))
    return out


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement taken as it is (an answer's backslashes are not group references)."""
    return lambda _match: text


def _text_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if any(part in SKIP_DIRS for part in path.relative_to(root).parts) or not path.is_file():
            continue
        if path.is_symlink() or path.stat().st_size > MAX_BYTES or path.name == ".copier-answers.yml":
            continue
        files.append(path)
    return files


def rename(root: Path, answers: dict[str, object]) -> list[Path]:
    """Replace the template's names by the answers in every text file; returns the files changed."""
    rules = replacements(answers)
    changed = []
    for path in _text_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary file (a figure): no names in it
        new = text
        for pattern, replacement in rules:
            new = pattern.sub(_literal(replacement), new)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def s3_tls(root: Path, tls: bool, endpoint: str = TEMPLATE["s3_endpoint"]) -> None:
    """The one TLS setting of every S3 client: pipelines/conventions.py and what is rendered from it. Only the
    S3 endpoint's URLs lose their TLS: the repository's, the registry's and the tracking server's keep theirs."""
    if tls:
        return
    conventions = root / "pipelines" / "conventions.py"
    if conventions.exists():
        conventions.write_text(conventions.read_text().replace("S3_TLS = True", "S3_TLS = False"))
    for path in sorted((root / "pipelines" / "rendered").glob("*.yaml")):
        text = path.read_text()
        text = text.replace(f"value: https://{endpoint}", f"value: http://{endpoint}")
        text = text.replace("insecure: false", "insecure: true")
        path.write_text(text)


def data_source(root: Path, source: str) -> None:
    params = root / "params.yaml"
    if params.exists() and source != TEMPLATE["data_source"]:
        text = params.read_text()
        params.write_text(text.replace(f"source: {TEMPLATE['data_source']}", f"source: {source}", 1))


def kserve(root: Path) -> None:
    """Each environment runs a KServe InferenceService (gitops/examples/kserve-staging) instead of a
    SeldonDeployment: its manifest and kustomization replace the environment's, named for the environment."""
    example = root / "gitops" / "examples" / "kserve-staging"
    if not example.is_dir():
        raise SystemExit(f"traffic_target=kserve: {example} is missing from the template")
    staging_ns = _namespace_of(root / "gitops" / "environments" / "staging" / "seldondeployment.yaml")
    for env in ENVIRONMENTS:
        target = root / "gitops" / "environments" / env
        namespace = _namespace_of(target / "seldondeployment.yaml")
        for stale in ("seldondeployment.yaml", "podmonitor.yaml"):
            (target / stale).unlink(missing_ok=True)
        for src in example.iterdir():
            text = src.read_text()
            if env != "staging":
                text = _bounded(staging_ns).sub(namespace, text)
                text = text.replace("sluice.dev/environment: staging", f"sluice.dev/environment: {env}")
                text = text.replace("The staging environment", f"The {env} environment")
            (target / src.name).write_text(text)
    shutil.rmtree(example)
    examples = example.parent
    if examples.is_dir() and not any(examples.iterdir()):
        examples.rmdir()


def _namespace_of(manifest: Path) -> str:
    m = re.search(r"^  namespace: (\S+)$", manifest.read_text(), re.MULTILINE)
    if not m:
        raise SystemExit(f"{manifest}: no metadata.namespace")
    return m[1]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: retarget.py PROJECT_DIR ANSWERS_JSON", file=sys.stderr)
        return 2
    root, answers = Path(argv[0]), json.loads(argv[1])
    answers = {k: v for k, v in answers.items() if not k.startswith("_")}
    rename(root, answers)
    s3_tls(root, bool(answers.get("s3_tls", True)), str(answers.get("s3_endpoint", TEMPLATE["s3_endpoint"])))
    data_source(root, str(answers.get("data_source", TEMPLATE["data_source"])))
    if answers.get("traffic_target", "seldon") == "kserve":
        kserve(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
