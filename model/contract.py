"""The data contract: the columns the model is trained on, in order, and the range each may take.

Bounds are physical (every measurement is non-negative) with an upper limit about twice the largest value
seen in the reference data, so drift is allowed but a unit change or a corrupt value is not.
"""

from __future__ import annotations

TARGET = "target"
CLASSES = (0, 1)  # 0 = malignant, 1 = benign (scikit-learn's encoding of the Wisconsin data)

FEATURE_BOUNDS: dict[str, tuple[float, float]] = {
    "mean_radius": (0.0, 57),
    "mean_texture": (0.0, 79),
    "mean_perimeter": (0.0, 380),
    "mean_area": (0.0, 5100),
    "mean_smoothness": (0.0, 0.33),
    "mean_compactness": (0.0, 0.7),
    "mean_concavity": (0.0, 0.86),
    "mean_concave_points": (0.0, 0.41),
    "mean_symmetry": (0.0, 0.61),
    "mean_fractal_dimension": (0.0, 0.2),
    "radius_error": (0.0, 5.8),
    "texture_error": (0.0, 9.8),
    "perimeter_error": (0.0, 44),
    "area_error": (0.0, 1100),
    "smoothness_error": (0.0, 0.063),
    "compactness_error": (0.0, 0.28),
    "concavity_error": (0.0, 0.8),
    "concave_points_error": (0.0, 0.11),
    "symmetry_error": (0.0, 0.16),
    "fractal_dimension_error": (0.0, 0.06),
    "worst_radius": (0.0, 73),
    "worst_texture": (0.0, 100),
    "worst_perimeter": (0.0, 510),
    "worst_area": (0.0, 8600),
    "worst_smoothness": (0.0, 0.45),
    "worst_compactness": (0.0, 2.2),
    "worst_concavity": (0.0, 2.6),
    "worst_concave_points": (0.0, 0.59),
    "worst_symmetry": (0.0, 1.4),
    "worst_fractal_dimension": (0.0, 0.42),
}

FEATURES: list[str] = list(FEATURE_BOUNDS)
COLUMNS: list[str] = [*FEATURES, TARGET]
