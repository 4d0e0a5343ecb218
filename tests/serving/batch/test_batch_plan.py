"""The chunk plan: every engine cuts a file at the same places, and a chunk read on its own is the chunk a
reader from the start would have given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import serving.batch.plan as plan_module
from serving.batch.formats import BatchError
from serving.batch.plan import make_plan, read_chunks

FEATURES = ["a", "b"]


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "in.csv"
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize("block", [1, 3, 7, 1 << 22])
def test_text_is_cut_every_n_lines_whatever_the_read_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(plan_module, "SCAN_BLOCK", block)
    path = _csv(tmp_path, "a,b\n" + "".join(f"{i},{i}\n" for i in range(10)))
    plan = make_plan(path, "csv", 3)
    assert (plan.kind, plan.rows, plan.chunks) == ("lines", 10, 4)
    data = path.read_bytes()
    pieces = [data[lo:hi].decode() for lo, hi in zip(plan.offsets, plan.offsets[1:], strict=False)]
    assert pieces == ["0,0\n1,1\n2,2\n", "3,3\n4,4\n5,5\n", "6,6\n7,7\n8,8\n", "9,9\n"]
    assert [plan.first_line(i) for i in range(4)] == [2, 5, 8, 11]


@pytest.mark.parametrize(
    ("text", "rows", "chunks"),
    [
        ("a,b\n", 0, 0),  # a header and nothing else
        ("a,b\n1,2", 1, 1),  # no newline at the end
        ("a,b\r\n1,2\r\n3,4\r\n", 2, 1),  # Windows line ends
        ("a,b\n1,2\n3,4\n", 2, 1),  # ends exactly on a chunk boundary
    ],
)
def test_edges_of_text_files(tmp_path: Path, text: str, rows: int, chunks: int) -> None:
    plan = make_plan(_csv(tmp_path, text), "csv", 2)
    assert (plan.rows, plan.chunks) == (rows, chunks)
    got = list(read_chunks(plan, FEATURES))
    assert sum(c.rows for c in got) == rows
    if rows:
        assert got[-1].X[-1].tolist() == ([1.0, 2.0] if rows == 1 else [3.0, 4.0])


def test_a_quote_anywhere_makes_csv_sequential_and_keeps_multiline_cells(tmp_path: Path) -> None:
    path = _csv(tmp_path, 'a,b,note\n1,2,"two\nlines"\n3,4,x\n5,6,y\n')
    plan = make_plan(path, "csv", 2)
    assert plan.kind == "sequential" and plan.chunks is None and not plan.splittable
    assert "quoted" in plan.note
    chunks = list(read_chunks(plan, FEATURES))
    assert [c.rows for c in chunks] == [2, 1]
    assert chunks[0].table is not None and chunks[0].table.column("note").to_pylist() == ["two\nlines", "x"]
    assert plan.tasks(workers=4) == [range(0, -1)]


def test_a_chunk_read_alone_equals_the_same_chunk_read_from_the_start(tmp_path: Path) -> None:
    lines = ["a,b"] + [f"{i},{i * 2}" for i in range(50)]
    lines.insert(9, "only-one-field")  # not a row: the chunk holding this line has one row fewer
    lines.insert(30, "1,2,3")
    path = _csv(tmp_path, "\n".join(lines) + "\n")
    plan = make_plan(path, "csv", 8)
    whole = list(read_chunks(plan, FEATURES))
    alone = [next(read_chunks(plan, FEATURES, range(i, i + 1))) for i in range(plan.chunks or 0)]
    assert [c.index for c in alone] == [c.index for c in whole] == list(range(7))
    for a, w in zip(alone, whole, strict=True):
        assert np.array_equal(a.X, w.X) and a.rows == w.rows
        assert [m.line for m in a.malformed] == [m.line for m in w.malformed]
    assert [(c.index, m.line) for c in whole for m in c.malformed] == [(1, 10), (3, 31)]
    assert [c.rows for c in whole] == [8, 7, 8, 7, 8, 8, 4]


def test_parquet_chunks_are_n_rows_across_row_groups(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(23.0), "b": -np.arange(23.0)})
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet", row_group_size=5
    )
    plan = make_plan(tmp_path / "in.parquet", "parquet", 4)
    assert (plan.kind, plan.rows, plan.chunks, plan.row_groups) == ("rows", 23, 6, (5, 5, 5, 5, 3))
    whole = list(read_chunks(plan, FEATURES))
    assert [c.rows for c in whole] == [4, 4, 4, 4, 4, 3]
    middle = list(read_chunks(plan, FEATURES, range(2, 4)))  # rows 8..15: row groups 1, 2 and 3
    assert [c.index for c in middle] == [2, 3]
    assert middle[0].X[:, 0].tolist() == [8, 9, 10, 11] and middle[1].X[:, 0].tolist() == [12, 13, 14, 15]


def test_tasks_cover_every_chunk_once_in_order(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b\n" + "1,2\n" * 100)
    plan = make_plan(path, "csv", 3)
    for workers in (1, 2, 5, 50):
        tasks = plan.tasks(workers)
        assert [i for t in tasks for i in t] == list(range(plan.chunks or 0))
        assert len(tasks) <= max(1, workers * 4)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.csv", b"", "empty file"),
        ("in.parquet", b"PAR1 not parquet", "cannot read it as Parquet"),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BatchError, match=message) as caught:
        make_plan(tmp_path / name, "csv" if name.endswith("csv") else "parquet", 10)
    assert name in str(caught.value)


def test_an_invalid_utf8_cell_is_reported_at_its_file_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 7 + b"caf\xe9,2\n" + b"1,2\n")
    plan = make_plan(path, "csv", 3)
    with pytest.raises(BatchError, match=r"Row #9: CSV conversion error"):
        list(read_chunks(plan, FEATURES, range(2, 3)))
