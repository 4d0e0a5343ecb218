"""The deployment contract that serving/ and rollout/ share, so each idea has one owner.

What a deployment manifest says: a SeldonDeployment (`deployment.seldon`) or a KServe InferenceService
(`deployment.kserve`), each a typed read-only view with its platform's defaults applied and the admission rules
both sides enforce, chosen by kind (`deployment.kinds`: the manifest's kind is the environment's target);
how predictors and the rollout are named (`deployment.names`), and what traffic carries on the wire and in
metrics (`deployment.wire`, `deployment.metric_names`).

A leaf: it imports nothing of the project's (an import-linter contract keeps it so).
"""
