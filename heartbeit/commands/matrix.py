"""`heartbeit matrix plan | run | status` — the benchmark matrix as resumable cells."""
from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path

from heartbeit.commands import fail
from heartbeit.config.cli_args import add_common_config_args
from heartbeit.config.layout import RunLayout, matrix_cells, matrix_plan, matrix_recipes

HELP = """The benchmark matrix: architecture x training fraction x task x seed.

  plan    list every cell with its stable id; writes <workdir>/matrix/plan.json
  run     run cells not yet done (all, --cells 3,7,10-12, or --array-index $SLURM_ARRAY_TASK_ID);
          a cell that is complete for the same id is skipped, a partial or failed one is redone
  status  planned / running / done / failed (with reasons) per cell

Cells fine-tune on the render stage's nested training fractions, select the epoch on the validation
split only, then score the internal test set and every external site once."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("plan", "run", "status"))
    parser.add_argument("--images", default=None, help="image shards (default: <workdir>/images)")
    parser.add_argument("--pretrained", default=None,
                        help="HeartBEiT export (default: <workdir>/pretrain/heartbeit-<variant>.safetensors)")
    parser.add_argument("--matrix-dir", default=None, help="plan and cells (default: <workdir>/matrix)")
    parser.add_argument("--cells", default=None, help="run only these cell indices, e.g. 3,7,10-12")
    parser.add_argument("--array-index", type=int, default=None,
                        help="run the cell at this index (a Slurm array task id)")
    add_common_config_args(parser)


def write_recipes(mcfg, path: Path) -> None:
    """Every planned architecture's fine-tuning recipe (optimizer, parameter groups, layer decay, head init,
    drop path, recipe version: families.recipe_of), beside the resolved config, as YAML."""
    import yaml

    from heartbeit.models.families import recipe_of
    from heartbeit.utils.io import atomic_write_text

    archs = list(dict.fromkeys([*mcfg.architectures, *mcfg.probe_architectures]))
    atomic_write_text(path, yaml.safe_dump({"recipes": {a: recipe_of(a, mcfg.layer_decay) for a in archs}},
                                           sort_keys=False))


def default_pretrained(cfg) -> Path | None:
    from heartbeit.config.layout import export_paths
    from heartbeit.models.families import needs_mim_export

    pretrained_archs = [a for a in [*cfg.matrix.architectures, *cfg.matrix.probe_architectures]
                        if needs_mim_export(a)]
    if not pretrained_archs:
        return None
    return export_paths(RunLayout.of(cfg).pretrain, pretrained_archs[0])[0]


class CellTrainer:
    """Trains one cell from the image shards (a picklable callable, so cells can run in worker processes).
    With `cells_dir`, cells keep mid-cell checkpoints in `cells/.resume/<id>/` and resume from them."""

    def __init__(self, images: Path, cfg, pretrained: str | None, cells_dir: Path | None = None):
        self.images, self.cfg, self.pretrained, self.cells_dir = images, cfg, pretrained, cells_dir

    def export_of(self, cell) -> str | None:
        """The export a cell starts from: the final one, or (pretraining ablation) the intermediate one of
        its step beside it, checked against the sha256 its id was planned with."""
        if getattr(cell, "pretrain_step", None) is None or not self.pretrained:
            return self.pretrained
        from heartbeit.config.layout import ablation_export_paths
        from heartbeit.utils.io import sha256_file

        file = ablation_export_paths(Path(self.pretrained).parent, cell.arch, cell.pretrain_step)[0]
        if not file.is_file() or sha256_file(file) != cell.pretrain_sha256:
            raise ValueError(f"{file}: missing or not the export this cell was planned with (re-run "
                             "`heartbeit matrix plan`)")
        return str(file)

    def __call__(self, cell, out_dir: Path) -> dict:
        from heartbeit.train.finetune import cell_data_from_shards, finetune_cell

        pretrained = self.export_of(cell)
        data = cell_data_from_shards(self.images, cell, self.cfg.matrix)
        if getattr(cell, "kind", "finetune") == "probe":
            from heartbeit.train.probe import linear_probe_cell

            summary = linear_probe_cell(cell, self.cfg.matrix, data, out_dir, pretrained_file=pretrained)
        else:
            from heartbeit.config.layout import cell_resume_dir
            from heartbeit.models.precision import cudnn_autotune, device_type_of

            resume_dir = cell_resume_dir(self.cells_dir, cell.cell_id) if self.cells_dir is not None else None
            with cudnn_autotune(cell.arch, device_type_of(self.cfg.matrix.device)):
                summary = finetune_cell(cell, self.cfg.matrix, data, out_dir, pretrained_file=pretrained,
                                        resume_dir=resume_dir)
        return {**summary, "profile": self.cfg.profile}


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.config import write_resolved
    from heartbeit.matrix import (ablation_archs, cell_status, parse_indices, plan_cells, read_ablation_exports,
                                  read_plan, run_cells, select_cells, write_plan)

    from heartbeit.config.preflight import check_run
    from heartbeit.models.families import needs_mim_export

    cfg = resolve_config(args)
    if args.action != "status":  # plan is a CPU stage; run needs the GPU (unless allow_cpu)
        # a cell loads its ImageNet file strictly itself; the plan (and `heartbeit run`) loads every file once
        check_run(cfg, ["plan", "matrix"] if args.action == "run" else ["plan"], load_weights=args.action == "plan")
    layout = RunLayout.of(cfg)
    images = Path(args.images) if args.images else layout.images
    matrix_dir = Path(args.matrix_dir) if args.matrix_dir else layout.matrix
    pretrained = Path(args.pretrained) if args.pretrained else default_pretrained(cfg)
    plan_path = matrix_plan(matrix_dir)

    if args.action == "plan":
        if pretrained is not None and not pretrained.is_file():
            return fail("matrix", f"no pretraining export at {pretrained} (run `heartbeit pretrain` first)")
        exports = []
        if ablation_archs(cfg.matrix) and pretrained is not None:  # the pretraining ablation's exports
            try:
                exports = read_ablation_exports(pretrained, cfg.pretrain.model, cfg.pretrain.export_at)
            except (OSError, ValueError) as exc:
                return fail("matrix", f"matrix.ablation_label_fraction: {exc}")
        cells = plan_cells(cfg.matrix, images, pretrained, exports)
        write_plan(cells, plan_path)
        write_resolved(cfg, matrix_dir)
        write_recipes(cfg.matrix, matrix_recipes(matrix_dir))
        for c in cells:
            print(f"{c.index:4d}  {c.cell_id}  {c.label}")
        print(f"{len(cells)} cells -> {plan_path}  (Slurm: sbatch --array=0-{len(cells) - 1}%K slurm/matrix.sh)")
        return 0

    cells = read_plan(plan_path)
    cells_dir = matrix_cells(matrix_dir)
    if args.action == "status":
        states, verdicts = collections.Counter(), collections.Counter()
        for c in cells:
            state, detail = cell_status(cells_dir, c)
            states[state] += 1
            if state == "done" and detail.startswith("sanity: "):
                verdicts.update(detail[len("sanity: "):].split(", "))
            print(f"{c.index:4d}  {c.cell_id}  {state:8s} {c.label}" + (f"  [{detail}]" if detail else ""))
        print(", ".join(f"{k}: {v}" for k, v in sorted(states.items())))
        if states["done"]:
            print("sanity of done cells: " + (", ".join(f"{k}: {v}" for k, v in sorted(verdicts.items()))
                                              or "no cell collapsed, had a non-finite loss or stayed at chance"))
        return 0

    # run
    indices = None
    if args.array_index is not None:
        indices = [args.array_index]
    elif args.cells:
        indices = parse_indices(args.cells)
    elif os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        indices = [int(os.environ["SLURM_ARRAY_TASK_ID"])]
    selected = select_cells(cells, indices)
    if pretrained is not None and any(needs_mim_export(c.arch) for c in selected) and not pretrained.is_file():
        return fail("matrix", f"no pretraining export at {pretrained} (run `heartbeit pretrain` first)")

    trainer = CellTrainer(images, cfg, str(pretrained) if pretrained else None, cells_dir)
    counts = run_cells(selected, cells_dir, trainer, jobs=cfg.matrix.jobs,
                       threads_per_job=cfg.matrix.threads_per_job or None)
    print(f"matrix: {counts['ran']} ran, {counts['done_before']} already done, {counts['failed']} failed"
          + (f", {counts['stopped']} stopped on request (rerun to resume)" if counts["stopped"] else "")
          + f" (of {len(selected)} selected)")
    if counts["stopped"]:
        from heartbeit.distributed.preempt import STOPPED_EXIT

        return STOPPED_EXIT
    return 1 if counts["failed"] else 0
