"""Install sets: every import is declared in the set of the code that needs it (deptry), every lock file pins
what pyproject.toml asks for, and each set installs from its lock into a clean venv and imports what it is for
(and not what it leaves out: the serving set has no DVC, Great Expectations, matplotlib, Kafka client or
Seldon Core, and runs on numpy 2)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Each lock file and the extras it was compiled with (scripts/lock.sh); runtime adds requirements/runtime.in.
LOCKS = {
    "dev": ["test"],
    "serve": ["serve"],
    "train": ["train"],
    "gitops": ["gitops"],
    "seldon": ["serve", "seldon"],
    "runtime": ["serve", "batch", "train", "gitops", "ui", "monitor"],
}


def _requirements(extras: list[str]) -> list[Requirement]:
    """The base dependencies and those of `extras`, following `sluice[...]` references."""
    project = PYPROJECT["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name == "sluice":
                todo.extend(requirement.extras)
            else:
                out.append(requirement)
    return out


def _pins(lock: Path) -> dict[str, str]:
    return {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", lock.read_text(), re.M)
    }


@pytest.mark.parametrize("name", LOCKS)
def test_every_lock_pins_what_pyproject_asks_for_with_hashes(name: str) -> None:
    lock = REPO / "requirements" / f"{name}.lock"
    pins = _pins(lock)
    environment = default_environment() | {"python_version": "3.12", "python_full_version": "3.12.1"}
    environment |= {"sys_platform": "linux", "platform_system": "Linux"}
    wanted = _requirements(LOCKS[name])
    if name == "runtime":
        wanted += [
            Requirement(line)
            for line in (REPO / "requirements" / "runtime.in").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    for requirement in wanted:
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        key = canonicalize_name(requirement.name)
        assert key in pins, f"{lock.name}: {requirement.name} is not pinned: run `make lock`"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"{lock.name}: {requirement.name}=={pins[key]} does not satisfy {requirement.specifier}: run `make lock`"
        )
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()) if "==" in b]
    assert len(blocks) == len(pins) and all("--hash=sha256:" in b for b in blocks), (
        f"{lock.name}: every pin carries its hashes"
    )


def test_only_the_seldon_set_holds_numpy_below_2() -> None:
    for name in ("serve", "train", "gitops", "runtime"):
        numpy = _pins(REPO / "requirements" / f"{name}.lock").get("numpy")
        assert numpy is None or int(numpy.split(".")[0]) >= 2, (name, numpy)
    for name in ("seldon", "dev"):
        assert _pins(REPO / "requirements" / f"{name}.lock")["numpy"].startswith("1."), name
    assert "seldon-core" not in _pins(REPO / "requirements" / "serve.lock")


def test_every_import_is_declared_where_it_is_used() -> None:
    deptry = Path(sys.executable).parent / "deptry"
    result = subprocess.run([str(deptry), "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_import_check_finds_an_undeclared_import(tmp_path: Path) -> None:
    """deptry, configured as this project is, on a copy whose pyproject forgets a library the code imports."""
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "__init__.py").write_text("")
    (tmp_path / "serving" / "fast.py").write_text("import yarl\nimport orjson\n")
    text = (REPO / "pyproject.toml").read_text().replace('  "yarl>=1.9",\n', "")
    (tmp_path / "pyproject.toml").write_text(text)
    deptry = Path(sys.executable).parent / "deptry"
    result = subprocess.run([str(deptry), "."], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "'yarl' imported but" in result.stdout + result.stderr
    assert "orjson" not in result.stdout.split("Scanning")[-1].split("DEP002")[0]


# clean venvs ------------------------------------------------------------------------------------------------

CHECKS = {
    "serve": {
        "imports": [
            "serving.http.server",
            "serving.core.predictor",
            "serving.stream.worker",
            "model.registry",
        ],
        "absent": [
            "dvc",
            "great_expectations",
            "matplotlib",
            "confluent_kafka",
            "seldon_core",
            "sklearn",
            "pyarrow",
        ],
        "numpy": 2,
    },
    "train": {
        "imports": ["model.pipeline", "model.train", "model.checks", "model.package", "model.registry"],
        "absent": ["seldon_core", "confluent_kafka", "redis", "hera", "kubernetes_validate"],
        "numpy": 2,
    },
    "gitops": {
        "imports": ["rollout.reconciler", "pipelines.catalog", "pipelines.schemas", "deployment.seldon"],
        "absent": ["onnxruntime", "sklearn", "dvc"],
        "numpy": 2,
    },
    "seldon": {"imports": ["serving.component", "seldon_core.microservice"], "absent": ["dvc"], "numpy": 1},
}

PROBE = """
import importlib, importlib.util, json, sys
checks = json.loads(sys.argv[1])
for name in checks["imports"]:
    importlib.import_module(name)
present = [m for m in checks["absent"] if importlib.util.find_spec(m) is not None]
import numpy
print(json.dumps({"present": present, "numpy": numpy.__version__, "python": sys.version.split()[0]}))
"""


def _python(version: str) -> str | None:
    found = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    return str(found[-1]) if found else shutil.which(f"python{version}")


def _site_mib(venv: Path) -> float:
    total = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("serve", "3.12"),
        ("serve", "3.13"),
        ("train", "3.12"),
        ("train", "3.13"),
        ("gitops", "3.12"),
        ("seldon", "3.12"),
    ],
)
def test_each_set_installs_from_its_lock_into_a_clean_venv_and_imports(
    name: str, version: str, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    if not UV.exists():
        pytest.skip("uv is not installed (it is in the test set: make setup)")
    venv = tmp_path / f"venv-{name}"
    env = {**os.environ, "UV_NO_PROGRESS": "1"}
    for cmd in (
        [str(UV), "venv", "-q", "--python", python, str(venv)],
        [
            str(UV),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "--require-hashes",
            "-r",
            str(REPO / "requirements" / f"{name}.lock"),
        ],
        [str(UV), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--no-deps", str(REPO)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(
        REPO / "build", ignore_errors=True
    )  # setuptools' build directory of the non-editable install
    checks = CHECKS[name]
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE, json.dumps(checks)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the checkout: the installed package
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["present"] == [], f"the {name} set carries {result['present']}"
    assert int(result["numpy"].split(".")[0]) == checks["numpy"], result
    assert result["python"].startswith(version)
    record_property(f"{name}-py{version}-venv-mib", round(_site_mib(venv)))
    cli = subprocess.run(
        [str(venv / "bin" / "sluice"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0 and "batch" in cli.stdout, cli.stderr
    if name == "serve":  # a command of a set it lacks says which set to install, not a traceback
        (tmp_path / "in.csv").write_text("a\n1\n")
        missing = subprocess.run(
            [
                str(venv / "bin" / "sluice"),
                "batch",
                "score",
                "--model",
                str(tmp_path),
                "--input",
                str(tmp_path / "in.csv"),
                "--output",
                str(tmp_path / "out.csv"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert missing.returncode == 1, missing.stderr
        assert "pip install 'sluice[" in missing.stderr and "Traceback" not in missing.stderr
