"""Running the reconciler: the wiring of one environment's adapters from options, and the tick loop.

`build_environment(Options(...))` picks the SCM (a local git repository, or GitHub pull requests), the
traffic target (by the kind of manifest the environment holds: SeldonDeployment or InferenceService, on every
tick), the metric provider (a gateway's /metrics, or Prometheus), where the policy comes from (Git at the
commit each tick reads, or a folder) and the registry sync. `run(env)` ticks every policy interval, forever
by default: with no rollout active it idles (the in-cluster reconciler is a long-running Deployment, which
must never exit for lack of work), and it rides out what the next tick can fix (another reconciler acting
first, GitHub or Prometheus unreachable, a broken policy merged) with a back-off, logging each tick.
`sluice rollout reconcile`, the in-cluster Deployment and `sluice demo` all run this loop; they only render.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.metrics import MetricProvider, MetricsError
from rollout.policy import Policy, PolicyError, load_policy, loads_policy
from rollout.proposals import RolloutError
from rollout.reconciler import Environment, TickResult, tick
from rollout.scm import SCM, Conflict, SCMError, check_env, policy_path
from rollout.state import RolloutState, StateError
from rollout.targets import TargetError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0  # seconds between ticks before any policy could be read
MAX_BACKOFF = 300.0

# Failures the next tick may not meet again: logged, retried with a back-off. Anything else is a bug and
# ends the loop (the Deployment restarts the process, visibly).
RETRIED: tuple[type[BaseException], ...] = (
    SCMError,
    MetricsError,
    PolicyError,
    RolloutError,
    StateError,
    TargetError,
)


@dataclass(frozen=True)
class Options:
    """Where one environment's reconciler reads and writes: what `sluice rollout` takes as flags."""

    env: str
    repo: Path = Path(".")  # the GitOps repository (local SCM), and the root of the embedded registry
    policies: Path | None = None  # a folder read on every tick; None: policies/<env>.yaml from Git
    metrics_url: str | None = None  # a gateway's /metrics, scraped directly
    prometheus: str | None = None  # Prometheus base URL (used instead of metrics_url)
    github: str | None = None  # owner/name: pull requests on GitHub instead of the local repository
    github_author: str | None = None  # the login the token's pull requests carry, if GET /user cannot say
    mlflow_tracking_uri: str | None = None  # the registry whose champion alias follows Git


class PolicyInGit:
    """policies/<env>.yaml at the very commit the tick read the manifest at: a merged policy change applies
    from the next tick on, on every reconciler, with no checkout to refresh."""

    def load(self, env: str, scm: SCM, revision: str) -> Policy:
        path = policy_path(env)
        source = f"{path}@{revision[:12]}"
        try:
            text = scm.read_path(revision, path)
        except SCMError as e:
            raise PolicyError(f"{source}: cannot be read ({e})", source) from e
        return loads_policy(text, source)


class PolicyFolder:
    """<folder>/<env>.yaml, read on every tick (`--policies`: a policy kept outside the GitOps repository)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, env: str, scm: SCM, revision: str) -> Policy:
        return load_policy(self.folder / f"{check_env(env)}.yaml")


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ChampionFollowsGit:
    """On every tick, the registry's `champion` alias names the stable predictor's registered version.

    Git decides; the registry mirrors it. An alias update that fails (MLflow down) is not lost: the next tick
    compares again and retries. A stable model that is not a registered version (a bundle path) is left alone.
    """

    def __init__(self, root: Path, tracking_uri: str | None = None):
        self.root = root
        self.tracking_uri = tracking_uri
        self._registry: Any = None

    def registry(self) -> Any:
        if self._registry is None:
            from model.registry import Registry

            self._registry = Registry(self.root, self.tracking_uri)
        return self._registry

    def __call__(self, state: RolloutState) -> str | None:
        try:
            stable = state.predictor(state.stable_name())
        except StateError:
            return None
        uri = stable.model_uri if stable is not None else None
        m = _MODELS_URI.match(uri or "")
        if m is None or m["alias"] == "champion":
            return None
        try:
            from model.registry import CHAMPION

            reg = self.registry()
            version = m["version"]
            if m["alias"]:
                ref = reg.alias(m["name"], m["alias"])
                if ref is None:
                    return f"registry: {uri} no longer resolves; champion alias left alone"
                version = ref.version
            current = reg.alias(m["name"], CHAMPION)
            if current is not None and current.version == version:
                return None
            before = reg.promote(m["name"], version)
        except Exception as e:  # the registry mirrors Git: a failure here never undoes Git, it is retried
            return f"registry: champion alias not updated ({type(e).__name__}: {e}); retried next tick"
        was = f" (was version {before.version})" if before is not None else ""
        return f"registry: {m['name']} version {version} is now champion{was}"


def build_environment(options: Options) -> Environment:
    """Wire one environment's adapters (SCM, target, metric provider, policy, registry) from options."""
    from rollout.targets.by_kind import ByKind

    env = check_env(options.env)
    scm: SCM
    if options.github:
        from rollout.scm.github import GitHub

        scm = GitHub(options.github, author=options.github_author)
    else:
        from rollout.scm.local import LocalGit

        scm = LocalGit(options.repo)
    metrics: MetricProvider | None = None
    if options.prometheus:
        from rollout.metrics.prometheus import PrometheusProvider

        metrics = PrometheusProvider(options.prometheus)
    elif options.metrics_url:
        from rollout.metrics.scrape import ScrapeProvider

        metrics = ScrapeProvider(options.metrics_url, history=scrape_history(options.repo, env))
    champion = None
    if not options.github or options.mlflow_tracking_uri:
        # With GitHub the registry is a server: without its URI there is nothing to keep in step.
        champion = ChampionFollowsGit(options.repo, options.mlflow_tracking_uri)
    return Environment(
        name=env,
        scm=scm,
        target=ByKind(),
        metrics=metrics,
        champion=champion,
        policies=PolicyFolder(options.policies) if options.policies else PolicyInGit(),
    )


def scrape_history(repo: Path, env: str) -> Path | None:
    """Where a scrape provider keeps its scrapes between runs (so that ticks of `reconcile --once` add up):
    in the repository's .git, never among its files."""
    git = repo / ".git"
    if git.is_file():  # a worktree: .git names the real directory
        text = git.read_text().strip()
        git = (repo / text.removeprefix("gitdir:").strip()).resolve() if text.startswith("gitdir:") else git
    return git / f"sluice-scrapes-{env}.json" if git.is_dir() else None


def candidate_model(uri: str, repo: Path, kind: str = "SeldonDeployment") -> tuple[str, str]:
    """(model URI to write in a manifest of `kind`, bundle digest) of a bundle path, file:// or models:/ URI.

    A SeldonDeployment names a registered version as `models:/...` (its predictor asks the registry). KServe's
    storage initializer fetches only storage URIs, so for an InferenceService a `models:/` URI becomes where the
    version's bundle is stored (its run's artifact URI), with the digest the version is tagged with: the model
    server refuses any other bundle, so the tag is checked where it matters.
    """
    from model.bundle import Bundle
    from model.registry import resolve_bundle_path

    if kind == "InferenceService" and uri.startswith("models:/"):
        return stored_bundle(uri, repo)
    bundle = Bundle.open(resolve_bundle_path(uri, repo))
    model_uri = uri if uri.startswith(("models:/", "file://")) else Path(uri).resolve().as_uri()
    return model_uri, bundle.digest


@dataclass(frozen=True)
class Initialized:
    """An environment's first manifest, committed."""

    commit: str
    name: str  # the stable predictor's name
    model_uri: str
    digest: str
    path: str  # the manifest, relative to the repository


def init_environment(
    repo: Path,
    env: str,
    model: str,
    *,
    deployment: str = "sluice-classifier",
    image: str | None = None,
    kind: str = "SeldonDeployment",
    force: bool = False,
) -> Initialized:
    """Write `env`'s first manifest (one stable predictor serving `model` at 100 %), checked by the guardrails,
    and commit it to main: what `sluice rollout init` does. `force` replaces an existing manifest."""
    from deployment.names import predictor_name
    from rollout.guardrails import check_manifest
    from rollout.scm import manifest_path
    from rollout.scm.local import LocalGit
    from rollout.targets import DEFAULT_IMAGE, kserve, seldon

    module = kserve if kind == "InferenceService" else seldon
    model_uri, digest = candidate_model(model, repo, kind)
    text = module.initial_manifest(
        env, model_uri, digest, deployment=deployment, image=image or DEFAULT_IMAGE
    )
    problems = check_manifest(text)
    if problems:
        raise RolloutError(f"{env}: " + "; ".join(str(p) for p in problems))
    name = predictor_name(digest)
    commit = LocalGit(repo).write_initial(
        env, text, f"rollout({env}): init with {name} at 100%\n\nmodel: {model_uri}", force=force
    )
    return Initialized(commit, name, model_uri, digest, str(manifest_path(env, kind)))


def stored_bundle(uri: str, repo: Path) -> tuple[str, str]:
    """(storage URI, digest) of a registered version's bundle: `runs:/<run>/<path>` in the artifact store."""
    from model.registry import Registry, RegistryError

    m = _MODELS_URI.match(uri)
    if m is None:
        raise RegistryError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    registry = Registry(repo)
    ref = registry.alias(m["name"], m["alias"]) if m["alias"] else registry.version(m["name"], m["version"])
    if ref is None:
        raise RegistryError(f"{uri}: model {m['name']!r} has no alias {m['alias']!r}")
    run = re.fullmatch(r"runs:/(?P<run>[^/]+)/(?P<path>.+)", ref.bundle_uri or "")
    if run is None or not ref.digest:
        raise RegistryError(
            f"{uri}: version {ref.version} was not registered by Sluice (no bundle URI and digest)"
        )
    artifacts = registry.client.get_run(run["run"]).info.artifact_uri.rstrip("/")
    return f"{artifacts}/{run['path']}", ref.digest


def candidate_for(env: Environment, uri: str, repo: Path) -> tuple[str, str]:
    """`candidate_model` for the kind of manifest `env` holds now."""
    from deployment.kinds import kind_of

    return candidate_model(uri, repo, kind_of(env.scm.read(env.name).text) or "SeldonDeployment")


# the loop ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    """One turn of the loop, for a renderer: a result, or why there is none this time."""

    number: int
    result: TickResult | None = None
    skipped: str = ""  # another reconciler acted first: nothing to do until the next tick
    error: str = ""  # a failure the next tick retries
    next_in: float = 0.0  # seconds until the next tick


def rollout_after(result: TickResult) -> Any:
    """The rollout annotation after a tick: the one it wrote, else the one it read."""
    if result.wrote and result.decision.rollout is not None:
        return result.decision.rollout
    return result.state.rollout if result.state is not None else None


def ended(result: TickResult) -> bool:
    """Whether no rollout is in progress after this tick (it just ended, or there was none)."""
    r = rollout_after(result)
    return r is None or not r.active


def event(result: TickResult) -> dict[str, Any]:
    """One tick as plain data: what a JSON log line carries."""
    d = result.decision
    state = result.state
    r = rollout_after(result)
    return {
        "env": result.env,
        "revision": result.revision,
        "action": d.action.value,
        "reason": d.reason,
        "step": d.step,
        "wrote": result.outcome.detail if result.outcome is not None else None,
        "weights": {p.name: p.traffic for p in state.predictors} if state is not None else {},
        "rollout": None
        if r is None
        else {"strategy": r.strategy, "candidate": r.candidate, "status": r.status},
        "gates": [
            {
                **dict(
                    zip(
                        ("gate", "metric", "n", "estimate", "interval", "acceptable", "verdict"),
                        g.row(),
                        strict=True,
                    )
                ),
                **g.evidence(),
            }
            for g in d.gates
        ],
        "pending": [p.name for p in result.pending],
        "notes": list(result.notes),
        "observe_seconds": round(result.observe_seconds, 3),
    }


def follow_chain(env: Environment, source: str) -> list[str]:
    """The policy's `promote_from`: propose here what `source` promoted (once, with its evidence), unless this
    environment is busy; returns notes for the tick. Needs the repository on disk (the local Git adapter):
    through GitHub, `sluice loop --chain` follows the chain instead."""
    from rollout.chain import chain_step
    from rollout.scm.local import LocalGit

    if source == env.name:
        return [f"promote_from names this environment ({source}): nothing to follow"]
    if not isinstance(env.scm, LocalGit):
        return [
            f"promote_from {source}: followed by `sluice loop --chain` with this SCM, not by the reconciler"
        ]
    try:
        outcomes = chain_step(env.scm.repo, [source, env.name])
    except (RolloutError, SCMError, StateError, TargetError, PolicyError, RuntimeError) as e:
        log.warning("chain from %s: %s", source, e, extra={"event": {"env": env.name, "chain_error": str(e)}})
        return [f"promote_from {source}: {e}"]
    notes = []
    for o in outcomes:
        if o.step == "nothing":
            continue
        notes.append(f"chain {o.source} -> {o.target}: {o.step}: {o.detail}")
        if o.step in ("proposed", "refused"):
            log.info("chain: %s", o.detail, extra={"event": {"env": env.name, "chain": o.step}})
    return notes


def run(
    env: Environment,
    max_ticks: int = 0,
    sleep: Callable[[float], object] = time.sleep,
    on_tick: Callable[[Tick], None] | None = None,
    until: Callable[[TickResult], bool] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Tick `env` every policy interval until `until(result)` says so, `stop()` is true (checked between
    ticks: a tick under way is finished), or `max_ticks` ticks (0: forever).

    Returns the number of ticks. Conflicts wait one interval; the failures in RETRIED are logged and retried
    with a back-off that doubles up to MAX_BACKOFF; anything else propagates.
    """
    n = 0
    failures = 0
    interval = env.policy.interval if env.policy is not None else DEFAULT_INTERVAL
    while (max_ticks == 0 or n < max_ticks) and not stop():
        n += 1
        try:
            result = tick(env)
        except Conflict as e:
            failures = 0
            step = Tick(n, skipped=str(e), next_in=interval)
            log.info("skipped: %s", e, extra={"event": {"env": env.name, "tick": n, "skipped": str(e)}})
        except RETRIED as e:
            failures += 1
            delay = min(MAX_BACKOFF, interval * 2 ** (failures - 1))
            step = Tick(n, error=str(e), next_in=delay)
            log.warning(
                "tick failed, retrying in %.0f s: %s",
                delay,
                e,
                extra={"event": {"env": env.name, "tick": n, "error": str(e), "retry_in": delay}},
            )
        else:
            failures = 0
            if result.policy is not None:
                interval = result.policy.interval
                if result.policy.promote_from:
                    followed = follow_chain(env, result.policy.promote_from)
                    result = dataclasses.replace(result, notes=(*result.notes, *followed))
            step = Tick(n, result, next_in=interval)
            log.info(
                "%s: %s",
                result.decision.action.value,
                result.decision.reason,
                extra={"event": {"tick": n, **event(result)}},
            )
        if on_tick is not None:
            on_tick(step)
        if step.result is not None and until is not None and until(step.result):
            break
        if (max_ticks and n >= max_ticks) or stop():
            break
        sleep(step.next_in)
    return n
