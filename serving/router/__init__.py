"""The router: one traffic layer for both runtimes (`sluice up` on one machine, `sluice router` in a cluster).

Weights, the shadow mirror and its comparison, per-user pinning, overrides, feedback to the predictor that
answered, and the retry on another predictor, with Seldon's executor metrics. Pure decisions live in
`routing`, `forwarding`, `attribution` and `puid`; the connection to a predictor is the `upstream.Upstream`
Protocol (`http_upstream`, a pooled HTTP/1.1 client on httptools, in production; in-memory in tests); `proxy` and `admin` are the ASGI apps that `listener`
serves with uvicorn; `watch` follows the manifest file; `cluster` wires it all for a Kubernetes Deployment.
"""
