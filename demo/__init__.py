"""`sluice demo`: the whole loop on one machine — train, serve, promote through gated stages, roll back, report."""
