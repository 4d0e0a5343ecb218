"""The header names and answer tags that route traffic between clients, the router and predictors.

Requests:
    x-sluice-predictor: NAME    send to this predictor, whatever its weight
    x-seldon-route: :NAME:      Seldon v2's pin: prefer NAME while it is a live predictor
    x-sluice-user: KEY          the default sticky key (an A/B policy may name another header)
    seldon-puid: ID             Seldon v1's request id, echoed in `meta.puid`
Answers:
    x-sluice-predictor, x-seldon-route   the predictor that answered
    x-sluice-retried-from: NAME          the predictor that failed first, when a request was retried
Seldon v1 answers also carry the predictor in `meta.tags[PREDICTOR_TAG]`.
"""

from __future__ import annotations

PREDICTOR_HEADER = "x-sluice-predictor"
SELDON_ROUTE_HEADER = "x-seldon-route"
STICKY_HEADER = "x-sluice-user"
PUID_HEADER = "seldon-puid"
RETRIED_HEADER = "x-sluice-retried-from"
PREDICTOR_TAG = "sluice_predictor"
