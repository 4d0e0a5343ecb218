"""Tables for the tests of bring-your-own-data: a mixed-type multiclass set with missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPECIES = ("Adelie", "Chinstrap", "Gentoo")


def penguins(rows: int = 600, seed: int = 7) -> pd.DataFrame:
    """A penguin-like table: numeric, categorical and boolean features, each with missing values, an ID column
    the model must not use, and a three-class text target that depends on all of them (plus noise)."""
    rng = np.random.default_rng(seed)
    species = rng.choice(SPECIES, size=rows, p=[0.45, 0.2, 0.35])
    island_of = {"Adelie": ["Biscoe", "Dream", "Torgersen"], "Chinstrap": ["Dream"], "Gentoo": ["Biscoe"]}
    island = np.array(
        [
            rng.choice(island_of[s]) if rng.random() > 0.1 else rng.choice(["Biscoe", "Dream", "Torgersen"])
            for s in species
        ],
        dtype=object,
    )
    bill = np.select([species == "Adelie", species == "Chinstrap"], [38.8, 48.8], 47.5) + rng.normal(
        0, 2.5, rows
    )
    flipper = np.select([species == "Adelie", species == "Chinstrap"], [190.0, 196.0], 217.0) + rng.normal(
        0, 6.5, rows
    )
    mass = np.select([species == "Adelie", species == "Chinstrap"], [3700.0, 3730.0], 5080.0) + rng.normal(
        0, 450, rows
    )
    sex = rng.choice(["female", "male"], size=rows).astype(object)
    adult = rng.random(rows) < 0.8
    frame = pd.DataFrame(
        {
            "penguin_id": [f"P{i:05d}" for i in range(rows)],
            "bill_length_mm": bill.round(1),
            "flipper length": flipper.round(0),
            "body_mass_g": mass.round(0),
            "island": island,
            "sex": sex,
            "adult": pd.array(adult, dtype=object),
            "species": species,
        }
    )
    for column, share in (
        ("bill_length_mm", 0.06),
        ("body_mass_g", 0.04),
        ("island", 0.05),
        ("sex", 0.08),
        ("adult", 0.05),
    ):
        frame.loc[rng.random(rows) < share, column] = None
    return frame
