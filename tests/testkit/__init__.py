"""What every test folder shares: free loopback ports, and the real services (Redis, Prometheus, promtool,
chromium, kubectl, jq) found one way, started one way and, when missing, reported one way."""
