"""The traffic gateway of `sluice up`: weights, shadow mirroring, sticky A/B keys, retries, Seldon metrics."""
