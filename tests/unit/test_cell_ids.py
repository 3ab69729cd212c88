"""Cell ids are what a finished cell is found by: a code change that alters them re-runs (or orphans) every
finished cell. The ids of the four profiles' plans, on a fixed images index and export, are pinned here as
they were before the image size became one key (render.image_size) and the family table replaced the
name checks: the matrix settings enter an id under their original names (matrix._ID_KEYS)."""
from __future__ import annotations

import hashlib
import json

import pytest

from heartbeit.config import load_config
from heartbeit.matrix import _finetune_fingerprint, plan_cells

# profile: (cells, sha256 of the ids joined by newlines, first 16 hex digits; the first id)
GOLDEN = {
    "ci": (126, "8755602a9831da6c", "fb1fffcf0650a1f9"),
    "demo": (135, "d752917df5e6c4dc", "66a62770b2162161"),
    "paper": (495, "6d13337f700cf158", "23d3c855ed1115bf"),
    "workstation": (495, "60d0c121c101ff0a", "613eea4d6eecea82"),
}


@pytest.mark.parametrize("profile", sorted(GOLDEN))
def test_profile_cell_ids_are_unchanged(profile, tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"splits": {"train": {"count": 10}}}))
    export = tmp_path / "export.safetensors"
    export.write_bytes(b"fixed export bytes")
    cfg = load_config(profile, overrides=[f"workdir={tmp_path}/w", "matrix.imagenet_weights_dir=", "matrix.device=cpu"])
    ids = [c.cell_id for c in plan_cells(cfg.matrix, tmp_path, export)]
    assert (len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16], ids[0]) == GOLDEN[profile]


def test_ids_hash_the_image_size_under_its_first_name():
    fp = _finetune_fingerprint(load_config("ci").matrix)
    assert fp["img_size"] == 64 and "image_size" not in fp
