"""Promotion policies: the schema of policies/<env>.yaml and `load_policy`, which refuses a bad file clearly.

A policy says how a candidate reaches users in one environment: the strategy, its stages (weight, bake time,
whether a human approves entering the stage), the metric gates every stage must pass, what a failure does
(`rollback`, or `freeze` for changes that cannot be undone) and how often the reconciler ticks.
Durations are seconds or strings such as `30s`, `5m`, `2h`, `1d`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from deployment import wire

Strategy = Literal["canary", "shadow", "ab", "bluegreen"]
STRATEGIES: tuple[str, ...] = ("canary", "shadow", "ab", "bluegreen")

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


class Gate(_Strict):
    """One metric check on the candidate, absolute or relative to the stable predictor.

    metric: `success_rate` (1 - 5xx / requests), `latency` (a quantile of request seconds from the histogram),
    `accuracy` (reward / feedback count), `disagreement` (shadow answers differing from the live model's),
    `promql` (a custom query; `{predictor}`, `{stable}`, `{deployment}`, `{window}`, `{namespace}` are
    substituted; Prometheus refuses a query that does not select `namespace="{namespace}"`).
    compare: `absolute` checks the value, `difference` checks value - stable's value, `ratio` value / stable's.
    The check passes when min <= compared value <= max. Fewer than `min_sample` observations is no data;
    `no_data` says what then happens: `hold` (wait, and fail once `no_data_deadline` has passed in the
    stage), `fail`, or `pass` (lets a stage advance, but missing data never promotes).
    """

    name: str = Field(min_length=1)
    metric: Literal["success_rate", "latency", "accuracy", "disagreement", "promql"]
    compare: Literal["absolute", "difference", "ratio"] = "absolute"
    min: float | None = None
    max: float | None = None
    quantile: float = Field(default=0.99, gt=0, lt=1)
    query: str | None = None
    min_sample: int = Field(default=0, ge=0)
    no_data: Literal["hold", "fail", "pass"] = "hold"
    no_data_deadline: Duration = 300.0

    @model_validator(mode="after")
    def _consistent(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs a threshold: min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.metric == "promql" and not self.query:
            raise ValueError("a promql gate needs `query`")
        if self.metric != "promql" and self.query:
            raise ValueError(f"`query` only applies to promql gates, not {self.metric}")
        if self.metric == "disagreement" and self.compare != "absolute":
            raise ValueError(
                "disagreement is already a comparison with the stable model: use compare: absolute"
            )
        return self


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
    """A/B: `split` percent of users (pinned by key) get the candidate. A two-sided test on `metric` decides
    once each arm has `min_sample` observations: p < `significance` and a difference of at least `min_effect`
    picks the winner; no winner by `max_duration` keeps the stable model. `test: z` is the classic
    two-proportion z-test (its error rate grows when read at every tick); `test: msprt` is a mixture
    sequential probability ratio test whose p-value stays valid however often it is read (`msprt_tau`: the
    scale of effects expected, as a difference of proportions)."""

    split: int = Field(default=50, ge=1, le=99)
    metric: Literal["success_rate", "accuracy"] = "accuracy"
    min_sample: int = Field(default=200, ge=1)
    significance: float = Field(default=0.05, gt=0, lt=0.5)
    min_effect: float = Field(default=0.0, ge=0, lt=1)
    max_duration: Duration = 86400.0
    test: Literal["z", "msprt"] = "z"
    msprt_tau: float = Field(default=0.05, gt=0, le=1)
    sticky_key: str = wire.STICKY_HEADER


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


class Policy(_Strict):
    """A promotion policy for one environment."""

    strategy: Strategy
    interval: Duration = 30.0
    window: Duration = 60.0
    on_failure: Literal["rollback", "freeze"] = "rollback"
    approve_promotion: bool = False
    stages: list[Stage] = Field(default_factory=list)
    gates: list[Gate] = Field(default_factory=list)
    shadow: ShadowSpec = ShadowSpec()
    ab: ABSpec = ABSpec()
    bluegreen: BlueGreenSpec = BlueGreenSpec()

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
            return Policy.model_validate({**self.model_dump(), "strategy": strategy})
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
