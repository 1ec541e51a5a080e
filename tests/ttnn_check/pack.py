"""Round-trip arrays through tt-metal's host packer (PyPI `ttnn`); runs in the ttnn venv.

usage: pack.py IN.npz OUT.npz    for every array K in IN and each format F, OUT gets
                                  "F|K" = ttnn.Tensor(values, shape, F, TILE).to_numpy();
                                  for keys starting "bf16|" (values exact in bf16) also
                                  "F|K|to_dtype" = a bfloat16 tile tensor converted by
                                  ttnn.to_dtype (how a bf16 host weight becomes bfp).
       pack.py --probe           start ttnn against the mock cluster and pack one tile.

Standalone on purpose: Python 3.12, numpy and ttnn only (no torch, no autotune).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

# tt-metal initialises a cluster even for host-only work; without a card it needs a mock.
os.environ.setdefault(
    "TT_METAL_MOCK_CLUSTER_DESC_PATH", str(Path(__file__).with_name("mock_n150.yaml"))
)
os.environ.setdefault("TT_LOGGER_LEVEL", "error")

import ttnn  # after the environment above

FORMATS = {"bfp_bf8": ttnn.bfloat8_b, "bfp_bf4": ttnn.bfloat4_b}


def round_trip(values: np.ndarray, dtype: object) -> np.ndarray:
    flat = values.astype(np.float32).ravel().tolist()
    out = ttnn.Tensor(flat, list(values.shape), dtype, ttnn.TILE_LAYOUT).to_numpy()
    return np.asarray(out, dtype=np.float32).reshape(values.shape)


def via_bf16(values: np.ndarray, dtype: object) -> np.ndarray:
    flat = values.astype(np.float32).ravel().tolist()
    bf16 = ttnn.Tensor(flat, list(values.shape), ttnn.bfloat16, ttnn.TILE_LAYOUT)
    out = ttnn.to_dtype(bf16, dtype).to_numpy()
    return np.asarray(out, dtype=np.float32).reshape(values.shape)


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        got = round_trip(np.full((32, 32), 3.3, np.float32), ttnn.bfloat8_b)
        print(f"ttnn {version('ttnn')} packs 3.3 as bfloat8_b: {got[0, 0]}")
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    outputs: dict[str, np.ndarray] = {}
    with np.load(argv[0]) as inputs:
        for key in inputs.files:
            values = inputs[key]
            for name, dtype in FORMATS.items():
                outputs[f"{name}|{key}"] = round_trip(values, dtype)
                if key.startswith("bf16|"):
                    outputs[f"{name}|{key}|to_dtype"] = via_bf16(values, dtype)
    np.savez(argv[1], **outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
