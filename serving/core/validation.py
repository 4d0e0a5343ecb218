"""Request validation for every serving mode: any accepted form of rows -> a matrix in signature order.

One set of rules for the HTTP protocols, the Seldon component, batch, stream and the edge runtime. It needs
numpy and the signature's features only (no pydantic, no scikit-learn), so a device running the edge runtime
uses this very module. Every number must be one the model can compute with: NaN, infinities and magnitudes
beyond 2**64 (whose products overflow the model's float32 arithmetic into NaN probabilities) are refused,
with the row and feature named. `check_shape` bounds the size arithmetic of a client's shape.

Features have the types of the bundle's contract (`FeatureRule`): numeric (a number), boolean (true or
false, or the numbers 1 and 0; as 1.0/0.0) and categorical (one of the listed categories, as text; any other
value is refused: the rule the contract documents). A nullable feature may be missing (null): NaN for a number or a boolean, `""`
for a category, which the model imputes or encodes. A model of numeric features only gets a float64
matrix, as before; one with a categorical feature gets an object matrix (floats and strings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The model computes in float32. A feature value is limited to 2**64 (about 1.8e19), the square root of the
# largest float32, so that a product of two values (a value times a weight, a squared distance) cannot
# overflow: beyond it, finite inputs come back as NaN probabilities. Anything larger (1e39 is finite in
# float64, infinite in float32) is refused with its row and feature.
MAX_MAGNITUDE = float(2**64)
MAX_DIMS = 8  # of a client's tensor shape; a feature matrix has two
# The ufuncs themselves: the ndarray.max / .sum wrappers cost more than a row of 30 values does.
_MAX = np.maximum.reduce
_SUM = np.add.reduce


class RequestError(ValueError):
    """A request the model cannot answer; the message names the problem (shown to the caller as a 4xx)."""


FEATURE_TYPES = ("numeric", "boolean", "categorical")
MISSING_CATEGORY = ""  # a missing categorical value, as the model takes it


@dataclass(frozen=True)
class FeatureRule:
    """What one feature accepts: its type, whether it may be missing, and (categorical) its categories."""

    type: str = "numeric"
    nullable: bool = False
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise ValueError(f"feature type {self.type!r}: expected one of {', '.join(FEATURE_TYPES)}")
        if self.type == "categorical" and not self.categories:
            raise ValueError("a categorical feature needs its categories")


PLAIN = FeatureRule()


class Features:
    """The model's input features in signature order, and the rules a request's rows must meet."""

    def __init__(self, names: Sequence[str], rules: Sequence[FeatureRule] | None = None):
        self.names: list[str] = [str(n) for n in names]
        if not self.names:
            raise ValueError("a model takes at least one feature")
        self.index = {name: i for i, name in enumerate(self.names)}
        self.count = len(self.names)
        self.rules: list[FeatureRule] = list(rules) if rules is not None else [PLAIN] * self.count
        if len(self.rules) != self.count:
            raise ValueError(f"{len(self.rules)} feature rules for {self.count} features")
        # Numbers only, none missing: the fast path, a float64 matrix checked with one reduction.
        self.plain = all(r == PLAIN for r in self.rules)
        # Any text: rows become an object matrix (floats and strings); otherwise float64 (NaN when missing).
        self.text = any(r.type == "categorical" for r in self.rules)
        self._allowed = [frozenset(r.categories) for r in self.rules]

    @classmethod
    def of(cls, features: Sequence[Any]) -> Features:
        """From a signature's features: mappings (signature.json as read) or objects with the same fields."""
        names, rules = [], []
        for f in features:
            get = f.get if isinstance(f, Mapping) else lambda key, default=None, f=f: getattr(f, key, default)
            names.append(str(get("name")))
            rules.append(
                FeatureRule(
                    type=str(get("type", "numeric") or "numeric"),
                    nullable=bool(get("nullable", False)),
                    categories=tuple(str(c) for c in (get("categories") or ())),
                )
            )
        return cls(names, rules)

    def from_text(self, value: str, j: int, where: str) -> Any:
        """A text cell (a CSV field; a Seldon ndarray that numpy turned to text) as JSON would carry it for
        feature `j`: a number, a boolean, the category itself; None for an empty cell. Not yet validated."""
        text = value.strip()
        rule = self.rules[j]
        if rule.type == "categorical":
            return value if value != "" else None
        if text == "":
            return None
        if rule.type == "boolean":
            lowered = text.lower()
            if lowered in ("true", "1", "1.0"):
                return True
            if lowered in ("false", "0", "0.0"):
                return False
            raise RequestError(f"{where}: {short_repr(value)} is not a boolean (true or false)")
        try:
            return float(text)
        except ValueError:
            raise RequestError(f"{where}: non-numeric value {short_repr(value)}") from None

    def probe(self) -> np.ndarray:
        """One row the model accepts (zeros; each categorical feature's first category), validated."""
        return self.validate([[r.categories[0] if r.type == "categorical" else 0 for r in self.rules]])

    def validate(self, rows: Any, names: Sequence[str] | None = None) -> np.ndarray:
        """Any accepted form of rows -> an array (n_rows, n_features) in signature order.

        Accepted: a 2-D array or list of lists (signature order, or the order of `names`), one flat row,
        a list of records `{feature: value}`, one record, or columns `{feature: [values]}`.
        float64 for a model of numbers (NaN where a nullable feature is missing); object (floats and
        strings) for a model with a categorical feature. Raises `RequestError` naming the row, feature and
        value at fault.
        """
        if not self.plain:
            return self._typed(self._cells(rows, names))
        if type(rows) is dict or (type(rows) is not list and isinstance(rows, Mapping)):
            if any(_is_list(v) for v in rows.values()):
                return self._from_columns(rows)
            return self._from_records([rows])
        if (
            isinstance(rows, list | tuple)
            and rows
            and type(rows[0]) is not list
            and isinstance(rows[0], Mapping)
        ):
            return self._from_records(rows)
        X = self._as_matrix(rows)
        if names is not None:
            X = X[:, self._order(names, X.shape[1])]
        elif X.shape[1] != self.count:
            raise RequestError(
                f"wrong feature count: got {X.shape[1]} values per row, the model takes {self.count}"
            )
        self._check_range(X)
        return X

    # forms -----------------------------------------------------------------------------------------
    def _as_matrix(self, rows: Any) -> np.ndarray:
        if isinstance(rows, np.ndarray):
            X = rows
        else:
            if type(rows) is not list and (isinstance(rows, str | bytes) or not isinstance(rows, Sequence)):
                raise RequestError(f"expected a list of rows, records or columns, got {type(rows).__name__}")
            try:
                X = np.asarray(rows)
            except ValueError as e:  # ragged rows, or nesting deeper than numpy's dimension limit
                raise RequestError(f"rows of different lengths or depths: {_first_line(e)}") from None
        if X.size == 0:
            raise RequestError("empty batch: the request holds no rows")
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise RequestError(f"expected a 2-D array (rows x features), got {X.ndim} dimensions")
        if X.dtype.kind not in "fiu":
            bad = _first_non_numeric(rows.tolist() if isinstance(rows, np.ndarray) else rows)
            if bad is not _NONE or X.dtype.kind != "O":
                raise RequestError(
                    f"non-numeric value in the request: {bad if bad is not _NONE else X.dtype}"
                )
            try:  # e.g. integers too large for int64: numbers all the same
                X = X.astype(np.float64)
            except OverflowError:  # an integer beyond any float: read as an infinity, refused with its place
                X = np.asarray([[_float(v) for v in row] for row in X.tolist()], dtype=np.float64)
        elif not isinstance(rows, np.ndarray) and _holds_bool(rows):
            # numpy reads [1.5, true] as [1.5, 1.0]; a boolean is not a feature value in any other form
            raise RequestError(f"non-numeric value in the request: {_first_non_numeric(rows)}")
        return X.astype(np.float64, copy=False)

    def _order(self, names: Sequence[str], width: int) -> list[int]:
        names = list(names)
        if len(names) != width:
            raise RequestError(f"names lists {len(names)} features but each row has {width} values")
        unknown = [n for n in names if n not in self.index]
        if unknown:
            raise RequestError(f"unknown feature {short_repr(unknown[0])} (the model takes {self._hint()})")
        if len(set(names)) != len(names):
            seen: set[str] = set()
            dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise RequestError(f"feature {dup!r} given twice")
        position = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.names if n not in position]
        if missing:
            raise RequestError(f"missing feature {missing[0]!r} ({len(missing)} missing in all)")
        return [position[n] for n in self.names]

    def _from_records(self, records: Sequence[Any]) -> np.ndarray:
        if len(records) == 0:
            raise RequestError("empty batch: the request holds no rows")
        X = np.empty((len(records), self.count), dtype=np.float64)
        for r, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise RequestError(
                    f"row {r}: expected a record {{feature: value}}, got {type(record).__name__}"
                )
            self._check_keys(record.keys(), f"row {r}: ")
            for name, value in record.items():
                X[r, self.index[name]] = _number(value, f"row {r}, feature {name!r}")
        return X

    def _from_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        self._check_keys(columns.keys(), "")
        lengths = set()
        for name, values in columns.items():
            if not _is_list(values):
                raise RequestError(f"column {name!r}: expected a list of values, got {type(values).__name__}")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise RequestError(f"columns of different lengths: {sorted(lengths)[:5]}")
        n = lengths.pop()
        if n == 0:
            raise RequestError("empty batch: the request holds no rows")
        X = np.empty((n, self.count), dtype=np.float64)
        for name, values in columns.items():
            j = self.index[name]
            for r, value in enumerate(values):
                X[r, j] = _number(value, f"row {r}, feature {name!r}")
        return X

    # typed features (booleans, categories, missing values) ------------------------------------------
    def _cells(self, rows: Any, names: Sequence[str] | None) -> list[list[Any]]:
        """Any accepted form -> rows of raw values in signature order (values not yet checked)."""
        if type(rows) is dict or (type(rows) is not list and isinstance(rows, Mapping)):
            if any(_is_list(v) for v in rows.values()):
                self._check_keys(rows.keys(), "")
                lengths = set()
                for name, values in rows.items():
                    if not _is_list(values):
                        raise RequestError(
                            f"column {name!r}: expected a list of values, got {type(values).__name__}"
                        )
                    lengths.add(len(values))
                if len(lengths) > 1:
                    raise RequestError(f"columns of different lengths: {sorted(lengths)[:5]}")
                columns = [list(rows[n]) for n in self.names]
                return [list(row) for row in zip(*columns, strict=True)]
            rows = [rows]
        if isinstance(rows, list | tuple) and rows and isinstance(rows[0], Mapping):
            out = []
            for r, record in enumerate(rows):
                if not isinstance(record, Mapping):
                    raise RequestError(
                        f"row {r}: expected a record {{feature: value}}, got {type(record).__name__}"
                    )
                self._check_keys(record.keys(), f"row {r}: ")
                out.append([record[n] for n in self.names])
            return out
        if isinstance(rows, np.ndarray):
            matrix: Any = rows.tolist()
        elif type(rows) is list or (isinstance(rows, Sequence) and not isinstance(rows, str | bytes)):
            matrix = list(rows)
        else:
            raise RequestError(f"expected a list of rows, records or columns, got {type(rows).__name__}")
        if matrix and not _is_list(matrix[0]):
            matrix = [matrix]  # one flat row
        if not matrix or not matrix[0]:
            raise RequestError("empty batch: the request holds no rows")
        width = len(matrix[0])
        for r, row in enumerate(matrix):
            if not _is_list(row) or len(row) != width or any(_is_list(v) for v in row):
                raise RequestError(f"row {r}: rows of different lengths or depths (expected {width} values)")
        if names is not None:
            order = self._order(names, width)
            return [[row[j] for j in order] for row in matrix]
        if width != self.count:
            raise RequestError(
                f"wrong feature count: got {width} values per row, the model takes {self.count}"
            )
        return [list(row) for row in matrix]

    def _typed(self, cells: list[list[Any]]) -> np.ndarray:
        if not cells:
            raise RequestError("empty batch: the request holds no rows")
        X = np.empty((len(cells), self.count), dtype=object if self.text else np.float64)
        for r, row in enumerate(cells):
            for j, value in enumerate(row):
                X[r, j] = self._cell(value, j, r)
        return X

    def _cell(self, value: Any, j: int, r: int) -> Any:
        rule = self.rules[j]
        if value is None or (type(value) is float and value != value):
            if rule.nullable:
                return MISSING_CATEGORY if rule.type == "categorical" else math.nan
            if value is None:
                raise RequestError(f"row {r}, feature {self.names[j]!r}: missing (null), and it may not be")
        if rule.type == "numeric":
            return _number(value, f"row {r}, feature {self.names[j]!r}")
        if rule.type == "boolean":
            if type(value) is bool:
                return float(value)
            if type(value) in (int, float) and value in (0, 1):
                return float(value)
            raise RequestError(
                f"row {r}, feature {self.names[j]!r}: {short_repr(value)} is not a boolean (true or false)"
            )
        if type(value) is not str:
            raise RequestError(
                f"row {r}, feature {self.names[j]!r}: {short_repr(value)} is not a category (expected text)"
            )
        if value not in self._allowed[j]:
            shown = ", ".join(repr(c) for c in rule.categories[:10])
            more = f", ... {len(rule.categories)} in all" if len(rule.categories) > 10 else ""
            raise RequestError(
                f"row {r}, feature {self.names[j]!r}: {short_repr(value)} is not one of its categories "
                f"({shown}{more})"
            )
        return value

    # rules -----------------------------------------------------------------------------------------
    def _check_keys(self, keys: Any, where: str) -> None:
        unknown = [k for k in keys if k not in self.index]
        if unknown:
            raise RequestError(
                f"{where}unknown feature {short_repr(unknown[0])} (the model takes {self._hint()})"
            )
        if len(keys) != self.count:
            missing = [n for n in self.names if n not in keys]
            raise RequestError(f"{where}missing feature {missing[0]!r} ({len(missing)} missing in all)")

    def _check_range(self, X: np.ndarray) -> None:
        # An online request holds a few rows: plain Python over its values costs a third of numpy's
        # per-call overhead in the server's hot path (benchmarks/serving.py). A NaN or an infinity makes
        # the sum non-finite; a finite sum that overflows falls through to the exact check.
        if X.size <= 256:
            values = X.ravel().tolist()
            if math.isfinite(sum(values)) and max(values) <= MAX_MAGNITUDE and min(values) >= -MAX_MAGNITUDE:
                return
        elif _MAX(np.abs(X), None) <= MAX_MAGNITUDE:
            return
        r, c = np.argwhere(~(np.abs(X) <= MAX_MAGNITUDE))[0]
        raise RequestError(f"row {r}, feature {self.names[c]!r}: {_value_problem(float(X[r, c]))}")

    def _hint(self) -> str:
        shown = ", ".join(repr(n) for n in self.names[:5])
        return f"{self.count} features: {shown}{', ...' if self.count > 5 else ''}"


def check_answer(X: np.ndarray, probabilities: np.ndarray) -> None:
    """Refuse rows the model could not compute: finite float32 values so large that its arithmetic overflows.

    (A logistic regression's w.x meets inf - inf and answers NaN.) Probabilities are within [0, 1], so their
    sum is finite exactly when they all are: for the few values of an online request, a Python sum is a
    quarter of numpy's per-call cost.
    """
    if math.isfinite(
        sum(probabilities.ravel().tolist()) if probabilities.size <= 256 else _SUM(probabilities, None)
    ):
        return
    r = int(np.flatnonzero(~np.isfinite(probabilities).reshape(len(probabilities), -1).all(axis=1))[0])
    numbers = [abs(v) for v in X[r].tolist() if type(v) is float and v == v]  # an object row holds text too
    largest = max(numbers, default=0.0)
    raise RequestError(
        f"row {r}: the model cannot compute an answer for these values (its arithmetic overflows; "
        f"the largest magnitude is {largest:g}, far outside anything it was trained on)"
    )


def check_shape(shape: Any, where: str, values: int) -> list[int]:
    """A client's tensor shape, checked to hold exactly `values` values: a short list of non-negative ints.

    The product is never carried past `values`, so a shape of huge integers costs as little as a small one.
    """
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape[: MAX_DIMS + 1]):
        raise RequestError(f"{where}: shape must be a list of non-negative integers, got {short_repr(shape)}")
    if len(shape) > MAX_DIMS:
        raise RequestError(f"{where}: shape has {len(shape)} dimensions, at most {MAX_DIMS} are accepted")
    size = 0 if 0 in shape else 1
    for d in shape if size else ():
        size *= d
        if size > values:
            break
    if size != values:
        needs = str(size) if size <= max(values, 1 << 32) else f"more than {values}"
        raise RequestError(f"{where}: shape {short_repr(shape)} needs {needs} values, data holds {values}")
    return shape


def numeric_array(values: list[Any], where: str) -> np.ndarray:
    """A client's flat or nested list of numbers as an array: booleans, strings and nulls are refused."""
    try:
        array = np.asarray(values)
    except ValueError:
        raise RequestError(f"{where}: nested lists of different lengths") from None
    if not array.size:
        return array
    if array.dtype.kind not in "fiu":
        bad = _first_non_numeric(values)
        if bad is _NONE and array.dtype.kind == "O":
            return array  # integers beyond int64, kept exact as Python ints
        raise RequestError(
            f"{where}: non-numeric value in the request: {bad if bad is not _NONE else array.dtype}"
        )
    if (array.ndim > 2 and _first_non_numeric(values) is not _NONE) or _holds_bool(values):
        raise RequestError(f"{where}: non-numeric value in the request: {_first_non_numeric(values)}")
    return array


def _value_problem(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return f"{value} is not a finite number (NaN or inf)"
    return (
        f"{value:g} is beyond the range the model takes (|x| <= 2**64, about {MAX_MAGNITUDE:.3g}: larger values "
        "overflow its float32 arithmetic)"
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{where}: non-numeric value {short_repr(value)}")
    number = _float(value)
    if not -MAX_MAGNITUDE <= number <= MAX_MAGNITUDE:
        raise RequestError(f"{where}: {_value_problem(number)}")
    return number


def _float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _holds_bool(rows: Any) -> bool:
    if type(rows) is not list or not rows:
        return False
    return any(_row_holds_bool(row) for row in rows) if type(rows[0]) is list else _row_holds_bool(rows)


def _row_holds_bool(row: list[Any]) -> bool:
    # `in` compares in C and True == 1.0: it finds a boolean or a 0/1 value; only then are the types looked at.
    return (True in row or False in row) and bool in set(map(type, row))


_NONE = object()


def _first_non_numeric(rows: Any) -> Any:
    """The first value in nested lists that is not a number, as a short repr, or `_NONE`."""
    stack = [rows]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif isinstance(item, bool) or not isinstance(item, int | float):
            return short_repr(item)
    return _NONE


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr that a client cannot make long or slow (error messages echo values)."""
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(short_repr(v, 20) for v in value[:8])}, ... {len(value)} in all]"
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python converts to text
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
