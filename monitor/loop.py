"""The retraining loop on one machine (`sluice loop`): a trigger makes the labelled live data a new data version
(a commit), `dvc repro` trains, judges and packages on it (a commit), and a rollout into the first environment
is opened (the reconciler's commit, then one that closes the retrain).

Git is the only state. Every commit of a retrain carries trailers:

    Sluice-Retrain: <id>               the retrain (12 hex digits)
    Sluice-Retrain-Step: data | trained | rejected | promoted
    Sluice-Retrain-Until: <time>       (data) the newest prediction whose label is in this data version
    Sluice-Retrain-Reason: <text>      (data) what triggered it; (rejected) why it stopped
    Sluice-Retrain-Reference: <text>   (data) the contract's reference re-profiled from this data version
    Sluice-Retrain-Reverted: <sha>     (rejected) the data version the pipeline refused, reverted
    Sluice-Model: sha256:...           (trained, promoted) the bundle `dvc repro` packaged

`next_step` reads the newest retrain's commits on the checked-out branch and does the one step that follows
the last one recorded, checking first whether its effect is already there (the data version already committed,
`dvc repro` already up to date, the candidate already in the environment's manifest), so a loop killed at any
moment converges when it runs again, with no duplicate commit and no duplicate promotion. A retrain that ends
(`promoted` or `rejected`) lets the next trigger start a new one; a digest the gates rolled back before is
never proposed again (quarantine), and is recorded as rejected.

A data version re-profiles the contract's reference distribution (`model.profile.reprofile`): the `validate`
stage keeps refusing broken data (types, categories, classes, bounds, nulls, all as a person reviewed them) but
not the shift the retrain exists to learn, and monitoring then measures drift against what the new model was
trained on. A data version the `validate` stage refuses is reverted by the commit that records the refusal,
so the next retrain starts from the last good data version rather than on top of the broken rows.

Only a verdict closes a retrain as rejected: the `validate` stage refusing its data version, or the evaluate gate
failing its candidate (`reports/metrics/validation.json`, `reports/metrics/gate.json`, written by this run). A
`dvc repro` that fails before either judged (a crashed stage, a locked pipeline, the registry down) fails the
turn, which `run_loop` retries with backoff, and the data version waits for it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.contract import Contract, load_contract
from monitor.assess import Thresholds, assess
from monitor.follow import Follower
from monitor.records import Log, Scope, read_log
from monitor.sources import SourceError, open_source

log = logging.getLogger("sluice.loop")

RETRAIN = "Sluice-Retrain"
STEP = "Sluice-Retrain-Step"
UNTIL = "Sluice-Retrain-Until"
REASON = "Sluice-Retrain-Reason"
REFERENCE = "Sluice-Retrain-Reference"
REVERTED = "Sluice-Retrain-Reverted"
MODEL = "Sluice-Model"
DATA_FILE = "data/source/live.csv"
_SOURCE_LINE = re.compile(r"^(?P<indent>\s+)source:\s*(?P<value>\S+)(?P<rest>.*)$")
# A test or an operator's drill can make the process die right after a step, as `kill -9` would.
DIE_AFTER = "SLUICE_LOOP_DIE_AFTER"


class LoopError(RuntimeError):
    """A step could not run (git, DVC or the rollout refused); the next run tries again."""


@dataclass(frozen=True)
class LoopSettings:
    repo: Path
    log_dir: Path | str  # a directory or a redis:// stream URL
    env: str = "local"  # the first environment a new model is promoted into
    thresholds: Thresholds = field(default_factory=Thresholds)
    label_window: float = 86400.0
    retrain_every: float | None = None  # seconds; None: no schedule
    min_new_labels: int = 50  # a retrain needs at least this many newly labelled rows
    data_file: str = DATA_FILE
    python: str = sys.executable
    chain: tuple[str, ...] = ()  # ordered environments: a promotion in one is proposed to the next
    state_dir: Path | None = None  # the log reader's position and kept records (None: read the whole log)
    reprofile: bool = True  # a data version re-profiles the contract's reference distribution from its rows
    max_rows: int | None = None  # a data version keeps its newest rows up to this many (None: every row)


@dataclass(frozen=True)
class Progress:
    """The newest retrain as Git records it (empty: none yet)."""

    retrain: str | None = None
    step: str | None = None
    until: float = 0.0  # the newest labelled prediction already in a data version
    model: str | None = None
    started: float | None = None  # when its data commit was made

    @property
    def open(self) -> bool:
        return self.step in ("data", "trained")


@dataclass(frozen=True)
class Outcome:
    step: str  # waiting, data, trained, rejected, promoted
    detail: str
    retrain: str | None = None


# git ------------------------------------------------------------------------------------------------------
def git(repo: Path, *args: str, input: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "sluice", "GIT_AUTHOR_EMAIL": "sluice@localhost",
           "GIT_COMMITTER_NAME": "sluice", "GIT_COMMITTER_EMAIL": "sluice@localhost"}  # fmt: skip
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, input=input, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise LoopError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _trailers(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.startswith("Sluice-"):
            out[key] = value.strip()
    return out


def progress(repo: Path) -> Progress:
    """Read the newest retrain's steps from the commits of HEAD (newest first)."""
    text = git(repo, "log", "--format=%x1e%ct%n%B", f"--grep=^{RETRAIN}: ", "-n", "50", "HEAD")
    commits = []
    for chunk in text.split("\x1e")[1:]:
        stamp, _, body = chunk.partition("\n")
        commits.append((float(stamp), _trailers(body)))
    if not commits:
        return Progress()
    newest = commits[0][1].get(RETRAIN)
    steps = [(t, tr) for t, tr in commits if tr.get(RETRAIN) == newest]
    last = steps[0][1]
    data = next((tr for _, tr in steps if tr.get(STEP) == "data"), {})
    started = next((t for t, tr in steps if tr.get(STEP) == "data"), None)
    model = next((tr[MODEL] for _, tr in steps if MODEL in tr), None)
    until = max((float(tr[UNTIL]) for _, tr in commits if UNTIL in tr), default=0.0)
    del data
    return Progress(newest, last.get(STEP), until, model, started)


def _commit(
    repo: Path,
    subject: str,
    trailers: Sequence[tuple[str, str]],
    paths: Sequence[str] = (),
    body: str = "",
) -> str:
    message = subject + "\n\n" + (body.strip() + "\n\n" if body.strip() else "")
    message += "\n".join(f"{k}: {v}" for k, v in trailers) + "\n"
    if paths:
        git(repo, "add", "--", *paths)
        git(repo, "commit", "-q", "-F", "-", "--", *paths, input=message)
    else:
        git(repo, "commit", "-q", "--allow-empty", "-F", "-", input=message)
    return git(repo, "rev-parse", "HEAD").strip()


def _die_after(step: str) -> None:
    if os.environ.get(DIE_AFTER) == step:
        os._exit(137)


# the steps --------------------------------------------------------------------------------------------------
def next_step(settings: LoopSettings, now: float | None = None) -> Outcome:
    """Do the one step that follows what Git records; return what was done (or why nothing was)."""
    now = time.time() if now is None else now
    p = progress(settings.repo)
    if p.step == "data":
        return train(settings, p)
    if p.step == "trained":
        return promote(settings, p)
    return maybe_start(settings, p, now)


def maybe_start(settings: LoopSettings, p: Progress, now: float) -> Outcome:
    """Check the triggers on the labelled rows newer than the last data version; commit a data version if one
    fires and there are enough of them."""
    contract = load_contract(settings.repo / "contract.yaml")
    log_read = read_live(settings, contract)
    found = assess(log_read, contract, settings.thresholds)
    reasons = [f"{a.predictor}: {r}" for a in found for r in a.reasons(settings.thresholds)]
    last = p.started if p.started is not None else _first_commit_time(settings.repo)
    if settings.retrain_every is not None and now - last >= settings.retrain_every:
        reasons.append(
            f"schedule: {now - last:.0f} s since the last retrain (every {settings.retrain_every:g} s)"
        )
    if not reasons:
        return Outcome("waiting", "no trigger: no drift, accuracy within its threshold, no retrain due")
    rows = log_read.rows
    fresh = [i for i in range(len(rows)) if rows.truth[i] is not None and rows.time[i] > p.until]
    if len(fresh) < settings.min_new_labels:
        return Outcome(
            "waiting",
            f"triggered ({'; '.join(reasons)}) but only {len(fresh)} newly labelled rows "
            f"(a retrain needs {settings.min_new_labels})",
        )
    return commit_data(settings, contract, log_read, fresh, reasons, _drift_scores(found))


_followers: dict[tuple[str, Path], Follower] = {}


def read_live(settings: LoopSettings, contract: Contract) -> Log:
    """The whole log as the triggers see it; with a state directory read incrementally (same result)."""
    try:
        if settings.state_dir is None:
            return read_log(settings.log_dir, contract, Scope(), settings.label_window)
        key = (str(settings.log_dir), settings.state_dir)
        if key not in _followers:
            _followers[key] = Follower(open_source(settings.log_dir), settings.state_dir)
        return _followers[key].read(contract, Scope(), settings.label_window)
    except SourceError as e:
        raise LoopError(str(e)) from None


def _first_commit_time(repo: Path) -> float:
    return float(git(repo, "log", "--reverse", "--format=%ct", "HEAD").split()[0])


def _drift_scores(found: Sequence[Any]) -> str:
    """The largest feature drifts monitoring measured against the reference, e.g. `x PSI 1.204, y PSI 0.031`."""
    scores: dict[str, float] = {}
    for a in found:
        for x in a.drifts:
            if x.score == x.score:  # NaN: too few rows to judge
                scores[x.feature] = max(scores.get(x.feature, 0.0), float(x.score))
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{k} PSI {v:.3f}" for k, v in top) or "none measured"


def commit_data(
    settings: LoopSettings,
    contract: Contract,
    log_read: Log,
    fresh: list[int],
    reasons: list[str],
    drift: str = "",
) -> Outcome:
    """Append the fresh labelled rows to the live table (starting from the current source), track it with DVC,
    point params.yaml at it, re-profile the contract's reference from the table, and commit."""
    import pandas as pd

    from model.contract import dump_contract
    from model.datasets import read_source, read_table
    from model.profile import reprofile

    repo = settings.repo
    rows = log_read.rows
    names = contract.feature_names
    target = contract.target.name
    new = pd.DataFrame(rows.X[fresh], columns=names)
    new[target] = [rows.truth[i] for i in fresh]
    source = _current_source(repo)
    base = (
        read_table(repo / source, contract)
        if source == settings.data_file
        else read_source(source, repo, contract)
    )
    table = pd.concat([base[[*names, target]], new], ignore_index=True)
    dropped = max(0, len(table) - settings.max_rows) if settings.max_rows is not None else 0
    table = table.iloc[dropped:].reset_index(drop=True)  # rows are in arrival order: the oldest go
    until = float(max(rows.time[i] for i in fresh))
    digest = hashlib.sha256(f"{source}:{until:.6f}:{len(fresh)}".encode()).hexdigest()[:12]
    out = repo / settings.data_file
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    table.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    tmp.replace(out)
    _dvc(settings, "add", "-q", settings.data_file)
    if source != settings.data_file:
        _set_source(repo / "params.yaml", settings.data_file)
    paths = [settings.data_file + ".dvc", "params.yaml"]
    gitignore = Path(settings.data_file).parent / ".gitignore"
    if (repo / gitignore).exists():
        paths.append(str(gitignore))
    reason = "; ".join(reasons)
    trailers = [(RETRAIN, digest), (STEP, "data"), (UNTIL, f"{until:.6f}"), (REASON, _one_line(reason))]
    body = ""
    window = (
        f", the oldest {dropped} dropped: monitoring.retrain_max_rows is {settings.max_rows}"
        if dropped
        else ""
    )
    if settings.reprofile:
        dump_contract(reprofile(contract, table, settings.data_file), repo / "contract.yaml")
        paths.append("contract.yaml")
        said = (
            f"reference re-profiled from live data, {len(table)} rows ({len(fresh)} live), drift scores "
            f"{drift or 'not measured'}"
        )
        trailers.append((REFERENCE, _one_line(said)))
        body = (
            f"contract.yaml: {said}. Types, categories, classes, bounds and null shares are unchanged, so the "
            "validate stage still refuses broken rows; the distribution it and monitoring compare with is now "
            "this data version's."
        )
    _commit(
        repo,
        f"Retrain data: {len(fresh)} labelled live rows ({len(table)} in all{window})",
        trailers,
        paths,
        body,
    )
    _die_after("data")
    return Outcome(
        "data",
        f"{len(fresh)} labelled live rows committed as {settings.data_file} ({len(table)} rows in all{window}; "
        f"{reason})",
        digest,
    )


def train(settings: LoopSettings, p: Progress) -> Outcome:
    """`dvc repro` (nothing to do when already up to date), then commit what it changed."""
    from model.bundle import Bundle

    repo = settings.repo
    if _reverting(repo):
        # The last turn died between reverting a refused data version and recording the refusal: undo the
        # half-done revert, so the pipeline refuses the data version again and the refusal is recorded once.
        git(repo, "revert", "--abort")
        if (repo / (settings.data_file + ".dvc")).exists():
            _dvc(settings, "checkout", "-q", "--force", settings.data_file + ".dvc", check=False)
    began = time.time()
    proc = _dvc(settings, "repro", check=False)
    if proc.returncode != 0 and _busy(proc.stderr + "\n" + proc.stdout):
        # Another DVC holds the pipeline's files (or one killed with the last turn has not been reaped yet:
        # DVC frees a dead process's locks itself): nothing was judged, so nothing is recorded; the next
        # turn runs the pipeline again.
        raise LoopError(
            f"dvc repro: the pipeline's files are locked ({_one_line(_failure_line(proc.stderr))})"
        )
    if proc.returncode != 0:
        refused = _refusal(repo, began)
        verdict = None if refused else _gate_failed(repo, began)
        failure = _failure_line(proc.stderr + "\n" + proc.stdout) or f"exit {proc.returncode}"
        if not (refused or verdict):
            # Neither the validate stage nor the evaluate gate judged this data version: a stage crashed (out of
            # memory, a full disk, the registry down, a bug). Spending the data version on that would close the
            # retrain for a reason that has nothing to do with it: the turn fails and is retried.
            raise LoopError(f"dvc repro failed before any gate judged the candidate: {_one_line(failure)}")
        tail = _one_line(refused or verdict or failure)
        trailers = [(RETRAIN, p.retrain or ""), (STEP, "rejected"), (REASON, tail)]
        subject = f"Retrain {p.retrain}: stopped, dvc repro failed"
        if refused:
            reverted = _revert_data(settings, p.retrain or "")
            if reverted:
                _die_after("reverted")  # the revert is staged, the refusal not recorded yet
                trailers.append((REVERTED, reverted))
                subject = (
                    f"Retrain {p.retrain}: stopped, the validate stage refused its data version (reverted)"
                )
        _commit(repo, subject, trailers)
        return Outcome("rejected", f"dvc repro failed: {tail}", p.retrain)
    digest = Bundle.open(repo / "artifacts" / "model").digest
    changed = [
        line[3:]
        for line in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
        if line[3:] == "dvc.lock"
        or line[3:].startswith(("reports/", "data/"))
        or line[3:].endswith(".gitignore")
    ]
    _commit(
        repo,
        f"Retrain {p.retrain}: trained and packaged {digest[:19]}",
        [(RETRAIN, p.retrain or ""), (STEP, "trained"), (MODEL, digest)],
        changed,
    )
    _die_after("train")
    return Outcome("trained", f"dvc repro packaged {digest}", p.retrain)


def promote(settings: LoopSettings, p: Progress) -> Outcome:
    """Open the rollout of the trained model into the first environment, unless it is already there (or was
    rolled back before: then it is never proposed again)."""
    from deployment.names import predictor_name
    from rollout import quarantine
    from rollout.reconciler import start
    from rollout.run import Options, build_environment, candidate_for

    repo = settings.repo
    env = build_environment(Options(env=settings.env, repo=repo))
    bundle = repo / "artifacts" / "model"
    uri = registered_uri(repo, p.model) if p.model else None
    model_uri, digest = candidate_for(env, uri or str(bundle), repo)
    if p.model and digest != p.model:
        raise LoopError(
            f"artifacts/model holds {digest}, but retrain {p.retrain} trained {p.model}: run dvc checkout"
        )
    snap = env.scm.read(env.name)
    state = env.target.state(snap.text)
    name = predictor_name(digest)
    already = any(getattr(x, "name", None) == name for x in getattr(state, "predictors", ()))
    pending = [q for q in env.scm.pending(env.name) if name in (env.scm.read_proposal(q) or "")]
    if not already and not pending:
        refused = quarantine.find(env.target, snap.text, digest, name)
        if refused is not None:
            _commit(repo, f"Retrain {p.retrain}: {name} is quarantined in {settings.env}, not proposed",
                    [(RETRAIN, p.retrain or ""), (STEP, "rejected"), (MODEL, digest), (REASON, f"quarantined in {settings.env}")])  # fmt: skip
            return Outcome(
                "rejected", f"{digest} was rolled back in {settings.env} before: not proposed", p.retrain
            )
        result = start(env, uri or str(bundle), model_uri, digest)
        _die_after("opened")  # the rollout is in Git, the retrain does not say so yet
        detail = f"rollout of {name} opened in {settings.env}: {result.decision.action}"
    else:
        detail = f"rollout of {name} was already open in {settings.env}"
    _commit(
        repo,
        f"Retrain {p.retrain}: promotion of {name} opened in {settings.env}",
        [(RETRAIN, p.retrain or ""), (STEP, "promoted"), (MODEL, digest)],
    )
    _die_after("promote")
    return Outcome("promoted", detail, p.retrain)


def _written_since(report: Path, since: float) -> Any:
    """A stage's JSON report, when the run that began at `since` wrote it (None: an earlier run did, since this
    one stopped before that stage, or it is missing or not JSON)."""
    import json

    try:
        if report.stat().st_mtime < since - 1:
            return None
        return json.loads(report.read_text())
    except (OSError, ValueError):
        return None


def _refusal(repo: Path, since: float) -> str | None:
    """What the validate stage refused in the run that began at `since` (None: it refused nothing)."""
    from model.layout import Layout

    found = _written_since(Layout(repo).validation_report, since)
    if not isinstance(found, dict) or found.get("success") is not False:
        return None
    from model.checks import Violation

    said = []
    for v in found.get("violations") or []:
        try:
            said.append(
                str(Violation(v["expectation"], v.get("column"), v.get("observed"), v.get("details", "")))
            )
        except (KeyError, TypeError):
            continue
    data = _current_source(repo)
    return f"the validate stage refused {data} (as {found.get('data') or 'data/raw/table.csv'}): " + (
        "; ".join(said) or "see reports/metrics/validation.json"
    )


def _gate_failed(repo: Path, since: float) -> str | None:
    """The evaluate gate's verdict when it failed the candidate in the run that began at `since`, else None."""
    from model.evaluate import Gate
    from model.layout import Layout

    found = _written_since(Layout(repo).gate_report, since)
    try:
        verdict = Gate(**found)
    except TypeError:  # None, or not the fields of a verdict
        return None
    return None if verdict.passed else verdict.explain()


def _reverting(repo: Path) -> bool:
    try:
        git(repo, "rev-parse", "-q", "--verify", "REVERT_HEAD")
    except LoopError:
        return False
    return True


def _busy(output: str) -> bool:
    """Whether `dvc repro` stopped because another DVC process holds the repository's or its files' locks."""
    return "is busy, it is being blocked by" in output or "Unable to acquire lock" in output


def _failure_line(output: str) -> str:
    """The failing stage's own last word in `dvc repro`'s output, rather than DVC's generic closing line."""
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    said = [x for x in lines if not x.startswith("ERROR: failed to reproduce") and "dvc.org/support" not in x]
    return (said or lines or [""])[-1]


def _revert_data(settings: LoopSettings, retrain: str) -> str | None:
    """Revert the data commit of `retrain` (data.source, the DVC pointer, the re-profiled reference) in the
    index, and put the previous data version back in the workspace; its sha, or None when it could not be
    reverted cleanly (a person changed the same lines since: the refusal is recorded, the data stays)."""
    repo = settings.repo
    found = git(repo, "log", "--format=%H%x1f%B%x1e", f"--grep=^{RETRAIN}: {retrain}$", "-n", "20", "HEAD")
    sha = next(
        (
            h.strip()
            for h, _, body in (c.partition("\x1f") for c in found.split("\x1e") if c.strip())
            if _trailers(body).get(STEP) == "data"
        ),
        None,
    )
    if sha is None:
        return None
    try:
        git(repo, "revert", "--no-commit", sha)
    except LoopError as e:
        with contextlib.suppress(LoopError):
            git(repo, "revert", "--abort")
        log.warning("retrain %s: could not revert its data version %s: %s", retrain, sha[:12], e)
        return None
    pointer = repo / (settings.data_file + ".dvc")
    data = repo / settings.data_file
    if pointer.exists():
        _dvc(settings, "checkout", "-q", "--force", settings.data_file + ".dvc", check=False)
    else:
        data.unlink(missing_ok=True)
    return sha


# helpers ------------------------------------------------------------------------------------------------------
def registered_uri(repo: Path, digest: str) -> str | None:
    """`models:/<name>/<version>` of the version the package stage registered for `digest` (None: none). A
    manifest naming the version keeps serving that very model after the next retrain replaces artifacts/model,
    and a promotion moves the registry's champion to it."""
    import yaml

    from model.registry import Registry, RegistryError

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    name = (params.get("registry") or {}).get("model_name")
    if not isinstance(name, str) or not name:
        return None
    try:
        ref = Registry(repo).by_digest(name, digest)
    except RegistryError:
        return None
    return f"models:/{name}/{ref.version}"


def _dvc(settings: LoopSettings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DIE_AFTER}
    # The pipeline's stages run `sluice`, installed beside the Python that runs DVC (the venv need not be active).
    env["PATH"] = f"{Path(settings.python).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [settings.python, "-m", "dvc", *args],
        cwd=settings.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if check and proc.returncode != 0:
        raise LoopError(f"dvc {' '.join(args)}: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc


def _current_source(repo: Path) -> str:
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    source = (params.get("data") or {}).get("source")
    if not isinstance(source, str) or not source:
        raise LoopError(f"{repo / 'params.yaml'}: data.source is missing")
    return source


def _set_source(path: Path, source: str) -> None:
    """Point data.source at `source`, keeping the file's comments and layout."""
    lines = path.read_text().splitlines(keepends=True)
    in_data = False
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            in_data = line.startswith("data:")
            continue
        m = _SOURCE_LINE.match(line.rstrip("\n"))
        if in_data and m:
            lines[i] = f"{m['indent']}source: {source}{m['rest']}\n"
            path.write_text("".join(lines))
            return
    raise LoopError(f"{path}: no data.source line to point at {source}")


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()[:300]


def follow_chain(settings: LoopSettings) -> list[Outcome]:
    """The chain's proposals and refusals this turn (quiet when there is nothing to do)."""
    if len(settings.chain) < 2:
        return []
    from rollout.chain import chain_step

    try:
        links = chain_step(settings.repo, settings.chain)
    except Exception as e:  # a chain that cannot be read must not stop retraining
        return [Outcome("error", f"environment chain: {e}")]
    return [
        Outcome("chain-" + x.step, f"{x.source} -> {x.target}: {x.detail}")
        for x in links
        if x.step in ("proposed", "refused")
    ]


MAX_BACKOFF = 32  # consecutive failed turns wait up to this many intervals


def run_loop(
    settings: LoopSettings,
    interval: float,
    on_outcome: Callable[[Outcome], Any],
    stop: Callable[[], bool],
    sleep: Callable[[float], Any] = time.sleep,
) -> None:
    """Step until `stop()`; wait `interval` when there is nothing to do, go on at once when a step was done.

    Nothing a turn raises stops the loop (a contract a person broke, a registry or a disk that is down, git or
    DVC over their time limit): it is reported as an `error` outcome and the turn is retried, waiting twice as
    long after each consecutive failure (up to MAX_BACKOFF intervals), so a lasting fault neither kills an
    unattended loop nor floods its log.
    """
    failures = 0
    while not stop():
        try:
            outcome = next_step(settings)
        except LoopError as e:
            outcome = Outcome("error", str(e))
        except Exception as e:  # the loop outlives any one failed turn
            log.exception("sluice loop: the turn failed")
            outcome = Outcome("error", f"{type(e).__name__}: {_one_line(str(e))}")
        on_outcome(outcome)
        for link in follow_chain(settings):
            on_outcome(link)
        failures = failures + 1 if outcome.step == "error" else 0
        if failures:
            sleep(interval * 2 ** min(failures - 1, MAX_BACKOFF.bit_length() - 1))
        elif outcome.step in ("waiting", "promoted", "rejected"):
            sleep(interval)
