"""Cell planning, ids, selection and the completion protocol (no training: a fake train function)."""
import json
import os

import pytest

from heartbeit.config import MatrixConfig
from heartbeit.matrix import cell_status, parse_indices, plan_cells, read_plan, run_cells, select_cells, write_plan


def small_cfg(**kw):
    base = dict(architectures=["heartbeit_micro_patch8_64", "resnet18"], fractions=[0.1, 1.0],
                tasks=["stemi", "hcm"], seeds=[0])
    base.update(kw)
    return MatrixConfig(**base)


def test_plan_is_stable_and_complete(images_dir, tmp_path):
    a = plan_cells(small_cfg(), images_dir, None)
    b = plan_cells(small_cfg(), images_dir, None)
    assert a == b and len(a) == 2 * 2 * 2
    assert len({c.cell_id for c in a}) == len(a)
    assert [c.index for c in a] == list(range(len(a)))
    write_plan(a, tmp_path / "plan.json")
    assert read_plan(tmp_path / "plan.json") == a


def test_ids_follow_config_and_data(images_dir):
    a = {c.label: c.cell_id for c in plan_cells(small_cfg(), images_dir, None)}
    # a setting that changes results changes every id
    b = {c.label: c.cell_id for c in plan_cells(small_cfg(epochs=3), images_dir, None)}
    assert all(a[k] != b[k] for k in a)
    # listing more seeds does not change the ids of existing cells
    c = {c.label: c.cell_id for c in plan_cells(small_cfg(seeds=[0, 1]), images_dir, None)}
    assert all(c[k] == a[k] for k in a)
    # new data changes every id
    (images_dir / "index.json").write_text(json.dumps({"shards": ["a", "b"]}))
    d = {c.label: c.cell_id for c in plan_cells(small_cfg(), images_dir, None)}
    assert all(a[k] != d[k] for k in a)


def test_parse_and_select():
    assert parse_indices("3,7,10-12") == [3, 7, 10, 11, 12]
    with pytest.raises(IndexError):
        select_cells([], [0])


def test_run_skips_done_redoes_partial_and_retries_failed(images_dir, tmp_path):
    cells = plan_cells(small_cfg(), images_dir, None)
    cells_dir = tmp_path / "cells"
    calls = []
    fail_once = {cells[1].cell_id}

    def train(cell, out):
        calls.append(cell.cell_id)
        if cell.cell_id in fail_once:
            fail_once.discard(cell.cell_id)
            raise RuntimeError("simulated failure")
        (out / "metrics.json").write_text("{}")
        return {"selected_epoch": 0}

    counts = run_cells(cells, cells_dir, train)
    assert counts == {"done_before": 0, "ran": len(cells) - 1, "failed": 1, "stopped": 0}
    assert cell_status(cells_dir, cells[1])[0] == "failed"
    assert "simulated failure" in cell_status(cells_dir, cells[1])[1]
    # a partial directory (no completion record) is redone
    (cells_dir / cells[0].cell_id / "complete.json").unlink()
    assert cell_status(cells_dir, cells[0])[0] == "partial"
    calls.clear()
    counts = run_cells(cells, cells_dir, train)
    assert sorted(calls) == sorted([cells[0].cell_id, cells[1].cell_id])
    assert counts["done_before"] == len(cells) - 2 and counts["failed"] == 0
    assert all(cell_status(cells_dir, c)[0] == "done" for c in cells)
    # third run: nothing to do
    calls.clear()
    run_cells(cells, cells_dir, train)
    assert calls == []
    summary = json.loads((cells_dir / cells[0].cell_id / "cell.json").read_text())
    assert summary["arch"] == cells[0].arch and summary["selected_epoch"] == 0


class _PidTrainer:
    """Picklable fake trainer recording which process ran each cell."""

    def __call__(self, cell, out):
        import os

        (out / "metrics.json").write_text("{}")
        return {"pid": os.getpid(), "worker": os.environ.get("HEARTBEIT_CELL_WORKER")}


def test_parallel_jobs_complete_every_cell_in_worker_processes(images_dir, tmp_path):
    import os

    cells = plan_cells(small_cfg(), images_dir, None)
    counts = run_cells(cells, tmp_path / "cells", _PidTrainer(), jobs=2, threads_per_job=1)
    assert counts == {"done_before": 0, "ran": len(cells), "failed": 0, "stopped": 0}
    pids = {json.loads((tmp_path / "cells" / c.cell_id / "cell.json").read_text())["pid"] for c in cells}
    assert os.getpid() not in pids and len(pids) >= 1
    # each cell process has its own index (worker n takes GPU n mod count on a multi-GPU node)
    by_pid = {}
    for c in cells:
        rec = json.loads((tmp_path / "cells" / c.cell_id / "cell.json").read_text())
        by_pid.setdefault(rec["pid"], set()).add(rec["worker"])
    assert all(len(w) == 1 for w in by_pid.values())
    workers = [w for ws in by_pid.values() for w in ws]
    assert len(set(workers)) == len(workers) and set(workers) <= {"0", "1"}
    assert all(cell_status(tmp_path / "cells", c)[0] == "done" for c in cells)


def test_status_reports_a_cell_whose_runner_died(images_dir, tmp_path):
    import socket
    import subprocess

    cells = plan_cells(small_cfg(), images_dir, None)
    dead = subprocess.Popen(["true"])
    dead.wait()
    marker = tmp_path / "cells" / ".running" / f"{cells[0].cell_id}.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "x"}))
    state, detail = cell_status(tmp_path / "cells", cells[0])
    assert state == "partial" and "interrupted" in detail
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "x"}))
    assert cell_status(tmp_path / "cells", cells[0])[0] == "running"
