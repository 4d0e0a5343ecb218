"""serving/Dockerfile, linted without hadolint or Docker: pinned base, non-root user in every final stage, no
`latest`, COPY sources that exist, each image installing its lock file, and entrypoints (the project's server
for the default target, seldon-core-microservice + serving.component.Classifier for serving-seldon) that take
the parameters the SeldonDeployment graph passes."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pipelines.build_image import BUILD, BUILD_ARGS, BUILD_OPTIONS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "serving" / "Dockerfile"
PINNED = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, (line.strip() for line in joined.splitlines())):
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            parts = rest.split()
            stages.append(
                Stage(parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages)), parts[0])
            )
        elif op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def resolve(base: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def test_every_base_is_a_stage_or_pinned_by_digest(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    args, stages = dockerfile
    names = set()
    for stage in stages:
        base = resolve(stage.base, args)
        assert base in names or PINNED.match(base), (
            f"stage {stage.name}: base {base!r} is not pinned by digest"
        )
        if base not in names:
            assert base.startswith("python:3.12-slim@"), base
        names.add(stage.name)
    instructions = [rest for s in stages for _, rest in s.instructions] + [
        resolve(s.base, args) for s in stages
    ]
    assert not [i for i in instructions if re.search(r":latest\b", i)], "no `latest` tags"


def _user(stage: Stage, stages: dict[str, Stage]) -> str | None:
    users = [rest for op, rest in stage.instructions if op == "USER"]
    if users:
        return users[-1]
    return _user(stages[stage.base], stages) if stage.base in stages else None


@pytest.mark.parametrize("target", ["runtime", "serving", "serving-seldon"])
def test_shipped_stages_run_as_non_root(dockerfile: tuple[dict[str, str], list[Stage]], target: str) -> None:
    _, stages = dockerfile
    by_name = {s.name: s for s in stages}
    user = _user(by_name[target], by_name)
    assert user is not None, f"{target} runs as root"
    uid = user.split(":")[0]
    assert uid not in {"0", "root"} and uid.isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"
    assert stages[-1].name == "serving", "the default target is the serving image"


def test_no_add_no_sudo_and_pip_without_cache(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    for stage in stages:
        for op, rest in stage.instructions:
            assert op != "ADD", "COPY is explicit; ADD fetches URLs and unpacks archives"
            if op == "RUN":
                assert "sudo" not in rest
                if "apt-get install" in rest:
                    assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists" in rest
    env = " ".join(rest for s in stages for op, rest in s.instructions if op == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in env


def test_copied_sources_exist_and_cover_every_package(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    copied: list[str] = []
    for stage in stages:
        for op, rest in stage.instructions:
            if op == "COPY" and "--from=" not in rest:
                copied += [p for p in shlex.split(rest)[:-1] if not p.startswith("--")]
    dvc_outs = {  # an out is a path, or a mapping of its path to its options (`cache: false`)
        o if isinstance(o, str) else next(iter(o))
        for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
        for o in s.get("outs", [])
    }
    for source in copied:
        produced_by_dvc = source.rstrip("/") in dvc_outs
        assert (REPO / source).exists() or produced_by_dvc, (
            f"COPY {source}: not in the repository nor a DVC output"
        )
    includes = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    for package in (i.rstrip("*") for i in includes):
        assert f"{package}/" in copied, f"package {package} is not copied, `pip install .` would miss it"


def _env(stage: Stage) -> list[dict[str, str]]:
    env = " ".join(rest for op, rest in stage.instructions if op == "ENV")
    raw = re.search(r'PREDICTIVE_UNIT_PARAMETERS="(.*?)"(?:\s|$)', env).group(1)  # type: ignore[union-attr]
    parameters: list[dict[str, str]] = json.loads(
        raw.replace('\\"', '"').replace("${BUNDLE_DIGEST}", "sha256:" + "0" * 64)
    )
    return parameters


def _graph_parameters() -> list[tuple[Path, set[str]]]:
    return [
        (path, {p["name"] for p in predictor["graph"]["parameters"]})
        for path in (REPO / "gitops" / "environments").glob("*/seldondeployment.yaml")
        for predictor in yaml.safe_load(path.read_text())["spec"]["predictors"]
    ]


def test_the_seldon_entrypoint_resolves_in_the_venv(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    [serving] = [s for s in stages if s.name == "serving-seldon"]
    (cmd,) = [json.loads(rest) for op, rest in serving.instructions if op == "CMD"]
    program, interface = cmd[0], cmd[1]
    assert program == "seldon-core-microservice"
    assert (REPO / ".venv" / "bin" / program).exists() or __import__("shutil").which(program)
    module_name, _, class_name = interface.rpartition(".")
    component = getattr(importlib.import_module(module_name), class_name)
    assert inspect.isclass(component) and callable(getattr(component, "predict", None))
    # The image's default parameters, and the graph's in every SeldonDeployment, fit the constructor.
    accepted = set(inspect.signature(component.__init__).parameters) - {"self"}
    assert {p["name"] for p in _env(serving)} <= accepted
    for path, names in _graph_parameters():
        assert names <= accepted, path
    assert {"9000", "5000", "6000"} <= set(
        " ".join(rest for op, rest in serving.instructions if op == "EXPOSE").split()
    )


def test_the_default_image_serves_with_the_project_server_from_the_operator_environment(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """The default target runs no Seldon Core: its own server reads the same graph parameters."""
    from serving.http import server

    _, stages = dockerfile
    serving = stages[-1]
    (cmd,) = [json.loads(rest) for op, rest in serving.instructions if op == "CMD"]
    assert cmd[:3] == ["python", "-m", "serving.http.server"] and "--seldon-env" in cmd
    args = server.parser().parse_args(cmd[3:])
    assert args.seldon_env and args.host == "0.0.0.0"
    uri, digest, port = server.seldon_env({server.SELDON_PARAMETERS: json.dumps(_env(serving))})
    assert (uri, digest, port) == ("file:///opt/sluice/bundle", "sha256:" + "0" * 64, 9000)
    for path, names in _graph_parameters():
        assert names <= {"model_uri", "model_digest"}, path
    exposed = set(" ".join(rest for op, rest in serving.instructions if op == "EXPOSE").split())
    assert exposed == {"9000", "6000"}


def test_the_pipeline_builds_a_target_that_exists(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    target = next(a.split("=", 2)[2] for a in BUILD_OPTIONS if a.startswith("--opt=target="))
    assert target in {s.name for s in stages}
    assert (
        "--opt=filename=Dockerfile" in BUILD_OPTIONS
        and "--local=dockerfile=/workspace/src/serving" in BUILD_OPTIONS
    )
    build_args = re.findall(r"--opt=\"build-arg:(\w+)=", BUILD)
    assert build_args == BUILD_ARGS
    declared = {rest.split("=")[0] for s in stages for op, rest in s.instructions if op == "ARG"}
    assert set(build_args) <= declared


def test_the_dockerfile_asks_buildkit_for_no_frontend_image_by_tag() -> None:
    """A `# syntax=` line makes BuildKit pull that frontend image before building: by tag, unless pinned."""
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"#\s*syntax\s*=\s*(\S+)", line)
        if match:
            assert PINNED.match(match.group(1)), f"{line}: pin the frontend by digest or drop the line"
        if line.strip() and not line.startswith("#"):
            break


def test_copy_from_names_earlier_stages_and_runtime_can_reach_the_dvc_remote(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    seen: set[str] = set()
    sources: dict[str, str] = {}
    for stage in stages:
        for op, rest in stage.instructions:
            match = re.search(r"--from=(\S+)", rest) if op == "COPY" else None
            if match:
                assert match.group(1) in seen, (
                    f"{stage.name}: COPY --from={match.group(1)} is not an earlier stage"
                )
                sources[stage.name] = match.group(1)
        seen.add(stage.name)
    by_name = {s.name: s for s in stages}
    runtime_venv = by_name[sources["runtime"]]
    plugins = [
        rest for op, rest in runtime_venv.instructions if op == "ARG" and rest.startswith("DVC_PLUGINS=")
    ]
    assert plugins and "dvc-" in plugins[0], (
        "the pipeline steps run `dvc pull/push`: install the remote's plugin"
    )
    assert sources["serving"] != sources["runtime"], "the model server does not carry the DVC plugins"
    installs = {
        name: " ".join(rest for op, rest in by_name[source].instructions if op == "RUN")
        for name, source in sources.items()
    }
    assert "requirements/serve.lock" in installs["serving"] and "--require-hashes" in installs["serving"]
    assert "requirements/seldon.lock" in installs["serving-seldon"]
    assert "requirements/runtime.lock" in installs["runtime"]


@pytest.mark.parametrize("target", ["serving", "serving-seldon"])
def test_the_server_cannot_change_its_own_bundle(
    dockerfile: tuple[dict[str, str], list[Stage]], bundle_dir: Path, target: str
) -> None:
    """The serving stage's COPY and RUN lines for the bundle, replayed on a real directory (as root, like the
    build), then the image's USER tries to change, add, remove and rename bundle files, and to read them."""
    import os
    import shutil
    import subprocess
    import tempfile

    from model.bundle import Bundle

    if os.geteuid() != 0:
        pytest.skip("acting as the image's root and its user needs root")
    _, stages = dockerfile
    [serving] = [s for s in stages if s.name == target]
    [(index, copy)] = [
        (i, rest)
        for i, (op, rest) in enumerate(serving.instructions)
        if op == "COPY" and "artifacts/model" in rest
    ]
    words = shlex.split(copy)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    destination = [w for w in words if not w.startswith("--")][-1].rstrip("/")
    user, _, group = [rest for op, rest in serving.instructions if op == "USER"][-1].partition(":")
    uid, gid = int(user), int(group or user)
    root = Path(tempfile.mkdtemp(prefix="image-"))
    try:
        root.chmod(0o755)
        target = root / destination.lstrip("/")
        shutil.copytree(bundle_dir, target)
        owner, _, owner_group = flags.get("chown", "0:0").partition(":")
        for path in [target, *target.rglob("*")]:
            os.chown(path, int(owner), int(owner_group or owner))
            if "chmod" in flags:
                path.chmod(int(flags["chmod"], 8))
        for op, rest in serving.instructions[index + 1 :]:
            if op == "RUN" and destination in rest:
                subprocess.run(["sh", "-c", rest.replace(destination, str(target))], check=True)
        attempts = {
            "overwrite": f'echo x >> "{target}/model.onnx"',
            "add": f'echo x > "{target}/extra.onnx"',
            "remove": f'rm -f "{target}/metadata.json"',
            "rename": f'mv "{target}/model.onnx" "{target}/other.onnx"',
            "chmod": f'chmod u+w "{target}/model.onnx"',
        }
        for what, command in attempts.items():
            result = subprocess.run(["/bin/sh", "-c", command], user=uid, group=gid, capture_output=True)
            assert result.returncode != 0, f"uid {uid} could {what} a bundle file"
        read = subprocess.run(
            ["/bin/sh", "-c", f'ls "{target}" && cat "{target}"/*.json > /dev/null'], user=uid, group=gid
        )
        assert read.returncode == 0, "the server must still read its bundle"
        assert Bundle.open(target).digest == Bundle.open(bundle_dir).digest
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)
