"""Model monitoring and the retraining loop: the prediction log read back and joined with its labels, drift
against the data contract's reference, live accuracy, the report, and `sluice loop`'s idempotent steps."""
