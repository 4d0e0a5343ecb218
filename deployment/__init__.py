"""The deployment contract that serving/ and rollout/ share, so each idea has one owner.

What a SeldonDeployment says (`deployment.seldon`: a typed read-only view with Seldon's defaults applied, and
the admission rules both sides enforce), how predictors and the rollout are named (`deployment.names`), and
what traffic carries on the wire and in metrics (`deployment.wire`, `deployment.metrics`).

A leaf: it imports nothing of the project's (an import-linter contract keeps it so).
"""
