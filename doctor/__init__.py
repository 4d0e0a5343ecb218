"""`sluice doctor`: checks that a project made from the template is wired up (names agree across manifests,
policies, workflows and pipelines; Git, GitHub, MLflow, Prometheus and the cluster answer) and says how to fix
what is not."""
