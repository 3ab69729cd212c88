"""Hospital scale on the report side: streamed cells, cell scoring in worker processes with the same bytes."""
import io

import pandas as pd
import pytest

from heartbeit.eval.cells import CellResult, long_metrics, read_cells
from helpers.synthetic_cells import write_fake_cells


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_fake_cells(root, archs={"heartbeit_micro": "heartbeit", "resnet18": "resnet"}, tasks=("stemi",),
                     fractions=(0.1, 1.0), seeds=(0,), n_test=200, n_external=120)
    return read_cells(root, hold=False)


def _bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def test_read_cells_stream_predictions(cells):
    assert cells and all(c.held is None and c.path is not None for c in cells)
    held = read_cells(cells[0].path.parent.parent)
    assert held[0].held is not None
    pd.testing.assert_frame_equal(cells[0].predictions, held[0].predictions)


def test_long_metrics_same_bytes_for_any_worker_count(cells):
    one = long_metrics(cells, n_resamples=50, workers=1)
    two = long_metrics(cells, n_resamples=50, workers=2)
    assert len(one) >= 2 * len(cells)  # internal + external (and per site) per cell
    assert _bytes(one) == _bytes(two)
    # held predictions score the same as streamed ones
    held = [CellResult(c.meta, c.predictions) for c in cells]
    assert _bytes(long_metrics(held, n_resamples=50)) == _bytes(one)


def test_array_scored_cells_are_gathered_with_the_same_bytes(cells, tmp_path, monkeypatch):
    from heartbeit.eval import cells as C

    fresh = long_metrics(cells, n_resamples=50)
    cache = tmp_path / "scores"
    assert C.score_cells(cells, cache, 0, 2, n_resamples=50) + C.score_cells(cells, cache, 1, 2, n_resamples=50) \
        == len(cells)
    assert len(list(cache.glob("*.json"))) == len(cells)

    def no_scoring(*a, **k):
        raise AssertionError("a cached cell was scored again")

    monkeypatch.setattr(C, "cell_metrics", no_scoring)
    assert _bytes(long_metrics(cells, n_resamples=50, cache_dir=cache)) == _bytes(fresh)
    # other settings do not reuse those rows
    with pytest.raises(AssertionError, match="scored again"):
        long_metrics(cells, n_resamples=60, cache_dir=cache)
    with pytest.raises(ValueError, match="task index"):
        C.score_cells(cells, cache, 2, 2)


def test_cli_score_only_writes_this_tasks_share(tmp_path, capsys):
    from heartbeit.cli import main

    cells_dir = tmp_path / "matrix" / "cells"
    write_fake_cells(cells_dir, archs={"heartbeit_micro": "heartbeit", "resnet18": "resnet"}, tasks=("stemi",),
                     fractions=(1.0,), seeds=(0, 1), n_test=100, n_external=50)
    for d in cells_dir.iterdir():
        (d / "complete.json").write_text("{}")  # the matrix marks finished cells so
    rc = main(["report", "--score-only", "--profile", "ci", "--workdir", str(tmp_path), "--task-index", "1",
               "--num-tasks", "3", "--set", "report.bootstrap=20"])
    assert rc == 0 and "scored 1 of 4 cells" in capsys.readouterr().out
    assert len(list((tmp_path / "report" / "scores").glob("*.json"))) == 1
