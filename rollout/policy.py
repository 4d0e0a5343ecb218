"""Promotion policies: the schema of policies/<env>.yaml and `load_policy`, which refuses a bad file clearly.

A policy says how a candidate reaches users in one environment: the strategy, its stages (weight, bake time,
whether a human approves entering the stage), the metric gates every stage must pass, what a failure does
(`rollback`, or `freeze` for changes that cannot be undone) and how often the reconciler ticks. The gates judge
every observation since a stage began, except its first `warmup` seconds: a new predictor's cold start and the
router picking up new weights are left out.
Durations are seconds or strings such as `30s`, `5m`, `2h`, `1d`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deployment import wire

Strategy = Literal["canary", "shadow", "ab", "bluegreen", "bandit"]
STRATEGIES: tuple[str, ...] = ("canary", "shadow", "ab", "bluegreen", "bandit")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy: the field (a dotted path, '' for the whole file), why, and the value."""

    field: str
    message: str
    value: Any = None


class PolicyError(ValueError):
    """A policy file that cannot be read or does not fit the schema; the message names file, field, reason,
    and `source` and `problems` say the same for a program to show (never re-parsed out of the message)."""

    def __init__(self, message: str, source: str = "", problems: tuple[Problem, ...] = ()):
        super().__init__(message)
        self.source = source
        self.problems = problems


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `1.5m`, `2h`, `1d` -> seconds. Negative or malformed values are refused."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r}: a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m[1]) * _UNITS[m[2]]
    raise ValueError(f"{value!r} is not a duration (use seconds or e.g. 30s, 5m, 2h, 1d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Metric = Literal["success_rate", "latency", "accuracy", "disagreement", "promql"]
_BETTER: dict[str, Literal["higher", "lower"]] = {
    "success_rate": "higher",
    "accuracy": "higher",
    "latency": "lower",
    "disagreement": "lower",
}


class Gate(_Strict):
    """One statistical decision: is the candidate worse than the stable model by more than `margin`?

    metric: `success_rate` (1 - 5xx / prediction requests; feedback requests never count), `latency` (a
    quantile of prediction request seconds), `accuracy` (summed reward / feedback count), `disagreement` (the
    share of a shadow's answers that differ from the live model's), `promql` (a custom mean: `query` gives its
    value per predictor and `sample_query` the number of observations behind it; `{predictor}`, `{stable}`,
    `{deployment}`, `{window}`, `{namespace}` are substituted, `{window}` being the time in the stage;
    Prometheus refuses a query that does not select `namespace="{namespace}"`).

    compare: `difference` (candidate - stable, the default with a margin), `ratio` (candidate / stable:
    latency only, its default) or `absolute` (against a fixed bound, `min` or `max`, the default with a bound:
    for when there is no stable model to compare with). `margin` is how much worse than the stable model
    the candidate may be: in the metric's units for a difference (0.02 = two accuracy points), a fraction for a ratio (0.2 = 20 % slower), the share of answers
    allowed to differ for disagreement, and a tolerance beyond the bound (default 0) for an absolute gate.

    Each tick the gate computes a confidence sequence for the comparison (rollout/stats.py: valid however
    often it is read) over every observation since the stage began, and answers
    `pass` when the candidate is not worse by more than the margin with probability `confidence`,
    `fail` when it is worse by more than the margin with that probability, and `hold` otherwise.
    Fewer than `min_sample` observations on either side is no data. A gate still holding when
    `no_data_deadline` has passed in the stage resolves by `no_data`: `hold` turns into a failure, `fail`
    fails at once when there is no data, `pass` lets a stage advance (but an undecided gate never promotes).
    A latency quantile needs enough requests to be bounded at all: a p99 needs several hundred, and
    `min_sample` below that is refused (left out, it is set to that minimum).
    """

    name: str = Field(min_length=1, max_length=100)
    metric: Metric
    compare: Literal["absolute", "difference", "ratio"] | None = None
    margin: float | None = Field(default=None, ge=0)
    min: float | None = None
    max: float | None = None
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    quantile: float = Field(default=0.99, gt=0, lt=1)
    query: str | None = None
    sample_query: str | None = None
    better: Literal["higher", "lower"] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    min_sample: int = Field(default=30, ge=0)
    no_data: Literal["hold", "fail", "pass"] = "hold"
    no_data_deadline: Duration = 300.0

    @field_validator("name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        if re.search(r"[\x00-\x1f\x7f;|]", name):
            raise ValueError(
                "a gate name is one line without ';' or '|' (it is written into commit trailers and tables)"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Gate:
        from rollout.stats import quantile_min_sample

        given = self.model_fields_set
        compare = self.comparison
        if self.metric == "disagreement":
            if self.compare not in (None, "absolute"):
                raise ValueError(
                    f"compare: {self.compare} does not apply to disagreement, which is already a comparison "
                    "with the stable model's answers"
                )
            if self.min is not None or self.max is not None:
                raise ValueError(
                    "disagreement gates take `margin` (the share of answers allowed to differ from the "
                    f"stable model's), not min/max (got min={self.min}, max={self.max})"
                )
            if not self.margin:
                raise ValueError("margin: a disagreement gate needs a margin above 0, e.g. margin: 0.05")
        elif compare == "absolute":
            if (self.min is None) == (self.max is None):
                raise ValueError(
                    "an absolute gate takes one bound: min (higher is better) or max (lower is better), "
                    f"got min={self.min}, max={self.max}"
                )
            natural = _BETTER.get(self.metric)
            wanted = "higher" if self.min is not None else "lower"
            if natural is not None and natural != wanted:
                raise ValueError(
                    f"{self.metric} is better {natural}: use {'min' if natural == 'higher' else 'max'}"
                )
            if self.better is not None and self.better != wanted:
                raise ValueError(
                    f"better: {self.better} contradicts the bound ({'min' if wanted == 'higher' else 'max'})"
                )
        else:
            if self.min is not None or self.max is not None:
                raise ValueError(
                    f"a {compare} gate takes `margin` (how much worse than the stable model the candidate "
                    f"may be), not min/max (got min={self.min}, max={self.max})"
                )
            if not self.margin:
                raise ValueError(f"margin: a {compare} gate needs a margin above 0 (got {self.margin})")
            if compare == "ratio" and self.metric != "latency":
                raise ValueError(f"compare: ratio applies to latency only, not {self.metric}: use difference")
        if self.metric == "promql":
            if not self.query or not self.sample_query:
                raise ValueError(
                    "a promql gate needs `query` (the value per predictor) and `sample_query` (how many "
                    "observations it is the mean of)"
                )
            if compare != "absolute" and self.better is None:
                raise ValueError("better: a relative promql gate must say whether higher or lower is better")
            if not self.bounds[0] < self.bounds[1]:
                raise ValueError(
                    f"bounds: the lowest value must be below the highest, got {list(self.bounds)}"
                )
        else:
            for name in ("query", "sample_query", "better"):
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}` only applies to promql gates, not {self.metric}")
            if self.bounds != (0.0, 1.0):
                raise ValueError(f"`bounds` only applies to promql gates, not {self.metric}")
        if self.metric == "latency":
            needed = quantile_min_sample(self.quantile, self.alpha_per_arm)
            if "min_sample" not in given:
                object.__setattr__(self, "min_sample", needed)
            elif self.min_sample < needed:
                raise ValueError(
                    f"min_sample: {self.min_sample} requests cannot bound a p{self.quantile * 100:g} latency at "
                    f"confidence {self.confidence:g}; it needs at least {needed} per predictor "
                    f"(use min_sample >= {needed}, or a lower quantile)"
                )
        elif "quantile" in given:
            raise ValueError(f"`quantile` only applies to latency gates, not {self.metric}")
        return self

    @property
    def comparison(self) -> Literal["absolute", "difference", "ratio"]:
        if self.compare is not None:
            return self.compare
        if self.metric == "disagreement" or self.min is not None or self.max is not None:
            return "absolute"
        return "ratio" if self.metric == "latency" else "difference"

    @property
    def direction(self) -> Literal["higher", "lower"]:
        """Which way is better for the compared value."""
        if self.comparison == "absolute" and self.metric != "disagreement":
            return "higher" if self.min is not None else "lower"
        return self.better or _BETTER.get(self.metric, "higher")

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence

    @property
    def alpha_per_arm(self) -> float:
        """The error budget of one predictor's interval when two are combined (latency)."""
        return self.alpha / 2 if self.comparison != "absolute" else self.alpha


class Stage(_Strict):
    """A canary stage: the candidate's share of traffic, how long it must bake, and whether entering it needs
    a human approval."""

    weight: int = Field(ge=1, le=100)
    bake: Duration = 60.0
    approval: bool = False


class ShadowSpec(_Strict):
    """Shadow: the candidate gets `mirror` percent of requests mirrored, its answers dropped, for `duration`;
    then the rollout goes on as `then` says (straight promotion, canary stages, or a blue/green switch)."""

    mirror: int = Field(default=100, ge=1, le=100)
    duration: Duration = 300.0
    then: Literal["promote", "canary", "bluegreen"] = "canary"


class ABSpec(_Strict):
    """A/B: `split` percent of users (pinned by key) get the candidate, and a test on `metric` (counted since
    the test began) decides once each arm has `min_sample` observations. With `margin` 0 the candidate must
    be better: it wins when the interval of (candidate - stable) lies above 0 by at least `min_effect`, and the
    stable model wins when it lies below 0. With a margin, the candidate is promoted when it is not worse than
    the stable model by more than the margin, and rolled back when it is. The interval has confidence
    1 - `significance`. No decision by `max_duration` keeps the stable model.
    `test: msprt` (the default) is a mixture sequential probability ratio test (rollout/stats.py): valid
    however often it is read (`msprt_tau`: the scale of differences expected). `test: z` is the classic
    fixed-sample z interval: its error rate grows when it is read at every tick."""

    split: int = Field(default=50, ge=1, le=99)
    metric: Literal["success_rate", "accuracy"] = "accuracy"
    min_sample: int = Field(default=200, ge=1)
    significance: float = Field(default=0.05, gt=0, lt=0.5)
    margin: float = Field(default=0.0, ge=0, lt=1)
    min_effect: float = Field(default=0.0, ge=0, lt=1)
    max_duration: Duration = 86400.0
    test: Literal["z", "msprt"] = "msprt"
    msprt_tau: float = Field(default=0.05, gt=0, le=1)
    sticky_key: str = wire.STICKY_HEADER


class BanditSpec(_Strict):
    """Bandit: Thompson sampling on the feedback reward. Each tick the candidate's share of traffic is the
    posterior probability that it is the better arm (Beta posteriors on `metric`, counted since the test
    began), kept within [`min_weight`, `max_weight`]; it is written to Git only when it moves by at least
    `step` points. The test stops when the probability that one arm is best reaches `threshold`: the candidate
    is promoted, or rolled back. With a `margin`, the candidate counts as best when it is at most that much
    worse. No decision by `max_duration` keeps the stable model."""

    metric: Literal["accuracy", "success_rate"] = "accuracy"
    start: int = Field(default=50, ge=1, le=99)
    min_weight: int = Field(default=5, ge=1, le=99)
    max_weight: int = Field(default=95, ge=1, le=99)
    step: int = Field(default=10, ge=1, le=98)
    threshold: float = Field(default=0.95, gt=0.5, lt=1)
    margin: float = Field(default=0.0, ge=0, lt=1)
    min_sample: int = Field(default=100, ge=1)
    max_duration: Duration = 86400.0
    prior: tuple[float, float] = (1.0, 1.0)

    @model_validator(mode="after")
    def _weights(self) -> BanditSpec:
        if not self.min_weight <= self.start <= self.max_weight:
            raise ValueError(
                f"start ({self.start}) must lie within min_weight ({self.min_weight}) and max_weight "
                f"({self.max_weight})"
            )
        if self.prior[0] <= 0 or self.prior[1] <= 0:
            raise ValueError(f"prior: both Beta parameters must be above 0, got {list(self.prior)}")
        return self


class BlueGreenSpec(_Strict):
    """Blue/green: green runs at 0 % for `warmup` while the gates check it (on smoke traffic pinned to it, e.g.
    with the local gateway's `x-sluice-predictor` header), then traffic switches along `switch` (e.g. [100], or [50, 100] for a short schedule, `step_bake` each); blue is
    kept at 0 % for `blue_bake` so that rollback is one flip, then retired."""

    warmup: Duration = 60.0
    switch: list[int] = Field(default_factory=lambda: [100], min_length=1)
    step_bake: Duration = 30.0
    blue_bake: Duration = 300.0
    approval: bool = False

    @model_validator(mode="after")
    def _schedule(self) -> BlueGreenSpec:
        if any(not 1 <= w <= 100 for w in self.switch):
            raise ValueError(f"switch weights must be 1..100, got {self.switch}")
        if self.switch != sorted(set(self.switch)) or self.switch[-1] != 100:
            raise ValueError(f"switch must rise strictly and end at 100, got {self.switch}")
        return self


class MonitoringSpec(_Strict):
    """Model monitoring and retraining for the environment (`sluice up --prediction-log`, `sluice monitor`,
    `sluice loop`): the share of predictions the router records, how long a label may take to arrive and still
    join its prediction (later ones are counted as late), and what starts a retrain: a feature's drift score
    (population stability index) over `drift_threshold`, live accuracy under `accuracy_threshold` (a regression:
    mean absolute error over `error_threshold`), or `retrain_every`. Nothing is judged on fewer than
    `min_records` predictions (`min_labels` labels for accuracy). `retrain_max_rows` bounds a retrain's data
    version to its newest rows (the oldest are dropped), so that training time and each version's size stop
    growing with every retrain of a loop that runs for months; null keeps every row."""

    sample: float = Field(1.0, ge=0.0, le=1.0)
    label_window: Duration = 86400.0
    drift_threshold: float = Field(0.2, gt=0.0)
    accuracy_threshold: float | None = Field(None, ge=0.0, le=1.0)
    error_threshold: float | None = Field(None, gt=0.0)
    retrain_every: Duration | None = None
    retrain_max_rows: int | None = Field(None, ge=1)
    min_records: int = Field(200, ge=1)
    min_labels: int = Field(50, ge=1)


class Policy(_Strict):
    """A promotion policy for one environment."""

    strategy: Strategy
    interval: Duration = 30.0
    window: Duration = 60.0
    warmup: Duration = 0.0
    on_failure: Literal["rollback", "freeze"] = "rollback"
    approve_promotion: bool = False
    # The environment before this one in the chain (local or staging before production): a model promoted there
    # is proposed here by this environment's reconciler, with that environment's gate evidence (rollout.chain).
    promote_from: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    stages: list[Stage] = Field(default_factory=list)
    gates: list[Gate] = Field(default_factory=list)
    shadow: ShadowSpec = ShadowSpec()
    ab: ABSpec = ABSpec()
    bluegreen: BlueGreenSpec = BlueGreenSpec()
    bandit: BanditSpec = BanditSpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        weights = [s.weight for s in self.stages]
        if weights != sorted(set(weights)):
            raise ValueError(f"stages: weights must rise strictly, got {weights}")
        needs_stages = self.strategy == "canary" or (
            self.strategy == "shadow" and self.shadow.then == "canary"
        )
        if needs_stages and not self.stages:
            raise ValueError(f"stages: strategy {self.strategy} needs at least one canary stage")
        names = [g.name for g in self.gates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"gates: names must be unique, repeated: {dupes}")
        if self.interval <= 0:
            raise ValueError("interval: must be more than 0 seconds")
        return self

    def with_strategy(self, strategy: str) -> Policy:
        """The same policy run with another strategy (`sluice rollout start --strategy`)."""
        if strategy not in STRATEGIES:
            raise PolicyError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        try:
            return Policy.model_validate({**self.model_dump(exclude_unset=True), "strategy": strategy})
        except ValidationError as e:
            raise PolicyError(f"strategy {strategy}: {describe_errors(e)}") from e


def problems(e: ValidationError) -> tuple[Problem, ...]:
    out = []
    for err in e.errors():
        value = err.get("input")
        out.append(
            Problem(
                ".".join(str(p) for p in err["loc"]),
                str(err["msg"]).removeprefix("Value error, "),
                None if isinstance(value, dict | list) else value,
            )
        )
    return tuple(out)


def describe_errors(e: ValidationError) -> str:
    parts = []
    for p in problems(e):
        shown = "" if p.value is None else f" (got {p.value!r})"
        parts.append(f"{p.field or '(top level)'}: {p.message}{shown}")
    return "; ".join(parts)


def parse_policy(data: Any, source: str = "<policy>") -> Policy:
    if not isinstance(data, dict):
        message = f"a policy is a mapping, got {type(data).__name__}"
        raise PolicyError(f"{source}: {message}", source, (Problem("", message),))
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{source}: {describe_errors(e)}", source, problems(e)) from e


def loads_policy(text: str, source: str) -> Policy:
    """A policy from YAML text; `source` names where it came from in every error (a path, path@commit)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(
            f"{source}: not valid YAML ({e})", source, (Problem("", f"not valid YAML ({e})"),)
        ) from e
    return parse_policy(data, source)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file. Raises PolicyError naming the file, the field and the reason."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: no such policy file", str(path), (Problem("", "no such policy file"),))
    return loads_policy(path.read_text(), str(path))
