"""The rollout engine: moves a candidate model into an environment stage by stage, behind metric gates, and
writes every step, forward or back, as a Git change.

Pure core: policy (schema), state (the manifest's weights and one annotation), gates, strategies, decision,
proposals (what to do with steps already written; how a rollout begins) and evidence (the trailers every
step's commit carries). Adapters behind Protocols: targets (Seldon Core v1), metrics (Prometheus, direct
scrape), scm (local git, GitHub). reconciler.py is the thin shell that carries decisions out; run.py wires an
environment's adapters from options and runs the tick loop; guardrails.check_manifest() runs on every
manifest written.
"""
