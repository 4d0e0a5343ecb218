"""`sluice ui`: one page for every environment, its stable model, the rollout in progress, its gates, its history
in Git and its live figures, with approve and abort going through Git like the CLI.

The dashboard keeps no state of its own: it reads Git (the manifest, its history, the policy) and the metric
providers, and derives everything else. Layers: history.py (the manifest's Git history), figures.py (live
figures from a scrape or Prometheus), views.py (the page's data, also the JSON API's), explain.py (one sentence
per gate, what happens next), board.py (refresh, fan-out, actions), charts.py (server-side SVG), app.py (HTTP).
"""
