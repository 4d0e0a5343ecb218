"""The rollout engine: moves a candidate model into an environment stage by stage, behind metric gates, and
writes every step, forward or back, as a Git change.

Pure core: policy (schema), state (the manifest's weights and one annotation), gates, strategies, decision.
Adapters behind Protocols: targets (Seldon Core v1), metrics (Prometheus, direct scrape), scm (local git,
GitHub). reconciler.tick() wires them; guardrails.check_manifest() runs on every manifest written.
"""
