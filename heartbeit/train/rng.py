"""Every random number generator a training process draws from, as a state that `torch.load(weights_only=True)`
reads back (plain containers and tensors only): Python's `random`, numpy's global RNG, torch's CPU and CUDA
generators. One home for pretraining checkpoints and mid-cell fine-tuning checkpoints."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_state = np.random.get_state(legacy=False)
    state["numpy"] = {"bit_generator": np_state["bit_generator"], "pos": int(np_state["state"]["pos"]),
                      "key": [int(k) for k in np_state["state"]["key"]], "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]}})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
