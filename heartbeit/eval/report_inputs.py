"""The report's inputs: the matrix's finished cells, and ECGs read back from the image shards.

Which cells count: those with the matrix's completion record (`complete.json`) plus `cell.json` and
`predictions.parquet`; unreadable or unfinished ones are listed as problems, not fatal. Images and
waveforms are read straight from the shard tars through the shards' own reader (heartbeit.data.members),
so the report sees exactly the bytes training saw.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.models.families import IMAGE_FAMILIES, arch_family
from heartbeit.records import CELL_WEIGHTS as MODEL_FILE, COMPLETE, IMAGES_LAYOUT, IMAGES_MANIFEST

from .cells import CellResult, finished_cell_dirs, read_cell

log = logging.getLogger("heartbeit.report")


# --------------------------------------------------------------------------------------------- cells


@dataclass
class CellSet:
    cells: list[CellResult] = field(default_factory=list)
    dirs: dict[str, Path] = field(default_factory=dict)  # cell_id -> folder
    problems: list[str] = field(default_factory=list)

    def has_model(self, cell: CellResult) -> bool:
        """Whether the cell kept its selected weights (saliency needs them)."""
        return (self.dirs[str(cell.meta["cell_id"])] / MODEL_FILE).is_file()

    def folder(self, cell: CellResult) -> Path:
        return self.dirs[str(cell.meta["cell_id"])]


def load_cells(cells_dir: str | Path) -> CellSet:
    """Finished cells (see the module note); unreadable or incomplete ones are listed, not fatal."""
    out = CellSet()
    cells_dir = Path(cells_dir)
    if not cells_dir.is_dir():
        out.problems.append(f"no cells folder at `{cells_dir}` (run `heartbeit matrix run` first)")
        return out
    dirs = finished_cell_dirs(cells_dir)
    planned = _planned_ids(cells_dir)
    if planned is not None:
        # cells of another plan (an earlier recipe version, export or config: other ids) stay on disk for reuse
        # but are not this study's; reporting them beside the current ones would mix two recipes silently
        stale = [d for d in dirs if d.name not in planned]
        if stale:
            out.problems.append(f"{len(stale)} finished cell folder(s) not in the current plan (an earlier recipe, "
                                "export or configuration) were left out")
        dirs = [d for d in dirs if d.name in planned]
    incomplete = [d for d in dirs if not (d / COMPLETE).is_file()]
    if incomplete:
        out.problems.append(f"{len(incomplete)} cell folder(s) without `{COMPLETE}` (unfinished) were left out")
    for d in dirs:
        if not (d / COMPLETE).is_file():
            continue
        try:
            cell = read_cell(d, hold=False)  # predictions are read where used (bounded memory)
        except ValueError as exc:
            out.problems.append(f"unreadable cell left out: {exc}")
            log.warning("%s", exc)
            continue
        out.cells.append(cell)
        out.dirs[str(cell.meta["cell_id"])] = d
    if not out.cells:
        out.problems.append(f"no finished cells in `{cells_dir}` (run `heartbeit matrix run` first)")
    return out


def _planned_ids(cells_dir: Path) -> set[str] | None:
    """The cell ids of the matrix plan beside `cells_dir` (<matrix>/plan.json), or None without a plan."""
    from heartbeit.config.layout import matrix_plan
    from heartbeit.matrix import read_plan

    plan = matrix_plan(Path(cells_dir).parent)
    return {c.cell_id for c in read_plan(plan)} if plan.is_file() else None


def unfinished_cells(cells_dir: str | Path) -> tuple[int, list[str]]:
    """(planned cells, one line per planned cell that is not done: label, id, state and the cell's own
    reason) from the matrix plan beside `cells_dir` (<matrix>/plan.json); (0, []) without a plan. A study
    whose Slurm chain lost cells (failed, timed out) still gets its report (the report job runs after the
    matrix whatever its outcome), and these lines say what is missing."""
    from heartbeit.config.layout import matrix_plan
    from heartbeit.matrix import cell_status, read_plan

    plan = matrix_plan(Path(cells_dir).parent)
    if not plan.is_file():
        return 0, []
    cells = read_plan(plan)
    out = []
    for cell in cells:
        state, detail = cell_status(cells_dir, cell)
        if state != "done":
            out.append(f"cell {cell.index} `{cell.cell_id}` {cell.label}: {state}" + (f" ({detail})" if detail else ""))
    return len(cells), out


def _cells_of(cells: list[CellResult], families: tuple[str, ...]) -> list[CellResult]:
    return [c for c in cells if (c.meta.get("arch_family") or arch_family(c.meta["arch"])) in families]


def image_cells(cells: list[CellResult]) -> list[CellResult]:
    """Cells of image models (the signal-domain baseline is read on its waveforms instead)."""
    return _cells_of(cells, IMAGE_FAMILIES)


def signal_cells(cells: list[CellResult]) -> list[CellResult]:
    return _cells_of(cells, ("signal",))


# -------------------------------------------------------------------------------------------- images


@dataclass
class ImageSet:
    root: Path
    manifest: pd.DataFrame | None = None
    layout: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.manifest is not None and self.layout is not None

    @property
    def boxes(self) -> list:
        from . import saliency as sal

        return sal.as_boxes(self.layout["boxes"])

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.layout["image_size"]
        return int(h), int(w)


def open_images(images_dir: str | Path) -> ImageSet:
    root = Path(images_dir)
    out = ImageSet(root)
    manifest, layout = root / IMAGES_MANIFEST, root / IMAGES_LAYOUT
    if not root.is_dir():
        out.problems.append(f"no image shards at `{root}` (run `heartbeit render` first): no data summary, "
                            "saliency or Wasserstein table")
        return out
    try:
        out.manifest = pd.read_parquet(manifest)
        missing = [c for c in ("ecg_uid", "split", "site", "key", "shard") if c not in out.manifest]
        if missing:
            raise ValueError(f"columns {missing} missing")
    except Exception as exc:  # missing or damaged file: say which
        out.manifest = None
        out.problems.append(f"`{manifest}` unreadable ({exc.__class__.__name__}: {exc})")
    try:
        out.layout = json.loads(layout.read_text())
        out.boxes  # noqa: B018  (validates the boxes)
    except Exception as exc:
        out.layout = None
        out.problems.append(f"`{layout}` unreadable ({exc.__class__.__name__}: {exc})")
    return out


def pick_rows(manifest: pd.DataFrame, mask, n: int, seed: int, purpose: str) -> pd.DataFrame:
    """`n` rows of `manifest[mask]` in a keyed pseudo-random order (a fixed function of each key)."""
    from heartbeit.data.splits import keyed_uniform

    part = manifest[mask & (manifest["shard"].astype(str) != "")]
    if part.empty or n <= 0:
        return part.iloc[:0]
    order = np.argsort(keyed_uniform(part["key"].astype(str).tolist(), seed, purpose), kind="stable")
    return part.iloc[order[:n]]


def _read_members(images: ImageSet, rows: pd.DataFrame, tar_of, exts: tuple[str, ...], decode, what: str) -> dict:
    """{row position: decode(bytes, ext)} for the manifest rows' members with one of `exts`, read from the
    tar `tar_of(shard)` of each row's shard by the loader's shard reader (only those samples' bytes when
    the shard has its member index)."""
    from heartbeit.data.members import read_samples

    wanted = {str(k): i for i, k in enumerate(rows["key"].astype(str))}
    found: dict[int, np.ndarray] = {}
    for shard, part in rows.groupby(rows["shard"].astype(str), sort=True):
        path = images.root / tar_of(shard)
        try:
            samples = list(read_samples(path, part["key"].astype(str).tolist()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable {what} shard ({exc.__class__.__name__})") from exc
        for sample in samples:
            ext = next((e for e in exts if e in sample), None)
            if sample["__key__"] in wanted and ext is not None:
                found[wanted[sample["__key__"]]] = decode(sample[ext], ext)
    missing = len(wanted) - len(found)
    if missing:
        raise ValueError(f"{images.root}: {missing} {what}(s) listed in manifest.parquet are not in their shard")
    return found


def read_images(images: ImageSet, rows: pd.DataFrame) -> np.ndarray:
    """uint8 [N, H, W] for the manifest rows, in their order, read straight from the shard tars."""
    from heartbeit.data.shard_format import decode_image

    found = _read_members(images, rows, str, ("png", "npy"), decode_image, "image")
    return np.stack([found[i] for i in range(len(found))]) if found else np.zeros((0, *images.size), np.uint8)


def read_waves(images: ImageSet, rows: pd.DataFrame) -> np.ndarray:
    """float32 mV [N, 12, L] for the manifest rows, in their order, from the shards' waveform siblings."""
    from heartbeit.data.shard_format import WAVE_EXT, decode_wave, wave_relpath

    found = _read_members(images, rows, wave_relpath, (WAVE_EXT,), lambda data, _: decode_wave(data), "waveform")
    return np.stack([found[i] for i in range(len(found))])
