"""How well `sluice monitor` tells drift from noise: detection rate by shift and sample size, and false alarms
on unshifted features, for the PSI-over-threshold-and-chi-squared rule against the contract's quantiles.

Rows are drawn from the breast-cancer data the contract was profiled from; one feature (mean_texture) is
shifted by a share of its reference 5-95 % range, three others are not (false alarms counted on them and on
the unshifted draw). Each cell: `BENCH_DRIFT_SEEDS` seeds (default 200).

    python -m benchmarks drift     # writes results/drift.json and results/drift.md
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

SEEDS = int(os.environ.get("BENCH_DRIFT_SEEDS", "200"))
SHIFTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
SIZES = (100, 300, 1000)
FEATURE = "mean_texture"
OTHERS = ("mean_radius", "worst_area", "mean_symmetry")


def main(results_dir: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    from model.contract import load_contract
    from monitor import drift as d

    contract = load_contract(Path(__file__).resolve().parents[1] / "contract.yaml")
    data = load_breast_cancer(as_frame=True).frame
    data.columns = [c.replace(" ", "_") for c in data.columns]
    refs = {}
    for name in (FEATURE, *OTHERS):
        ref = contract.feature(name).reference
        assert ref is not None and ref.quantiles is not None
        refs[name] = ref.quantiles
    q = refs[FEATURE]
    width = q[0.95] - q[0.05]
    rows = []
    for n in SIZES:
        for shift in SHIFTS:
            detected = false_alarms = 0
            scores = []
            for seed in range(SEEDS):
                rng = np.random.default_rng(seed)
                drifts = [d.numeric(FEATURE, rng.choice(data[FEATURE].to_numpy(), n) + shift * width, q)]
                drifts += [d.numeric(x, rng.choice(data[x].to_numpy(), n), refs[x]) for x in OTHERS]
                flagged = d.flag(drifts, threshold=0.2)
                detected += flagged[0].drifted
                false_alarms += sum(x.drifted for x in flagged[1:])
                scores.append(flagged[0].score)
            rows.append(
                {
                    "rows": n,
                    "shift_of_5_95_range": shift,
                    "flagged_rate": detected / SEEDS,
                    "false_alarm_rate_unshifted": false_alarms / (SEEDS * len(OTHERS)),
                    "median_psi": float(np.median(scores)),
                }
            )
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "drift.json").write_text(json.dumps({"seeds": SEEDS, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Drift detection: PSI > 0.2 and chi-squared p < 0.01 / features, against the contract's quantiles",
        "",
        f"{FEATURE} shifted by a share of its reference 5-95 % range; {', '.join(OTHERS)} unshifted; {SEEDS} "
        "seeds per cell. At shift 0 the flagged rate is the false-alarm rate of the shifted feature's column.",
        "",
        "| rows | shift | flagged | false alarms (unshifted features) | median PSI |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rows']} | {r['shift_of_5_95_range']:.2f} | {r['flagged_rate']:.1%} | "
            f"{r['false_alarm_rate_unshifted']:.1%} | {r['median_psi']:.3f} |"
        )
    (results_dir / "drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
