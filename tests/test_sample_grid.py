"""``benchmarks/sample_grid.py``: README's picture of sources, mask, composite, blur control and mix per sample."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from pipeline.data.subsets import read_subset
from tests.benchmark_scripts import BENCHMARKS, load_benchmark
from tests.stages.test_synthesize_stage import make_generator

SCRIPT = BENCHMARKS / "sample_grid.py"


def load_script():
    return load_benchmark("sample_grid")


def tiles(picture: np.ndarray, rows: int, cols: int, res: int) -> np.ndarray:
    """(rows, cols, side, side, 3) tiles of a grid drawn with 2 px gaps and 64 // res upscaling."""
    side, gap = res * max(1, 64 // res), 2
    assert picture.shape == (rows * (side + gap) + gap, cols * (side + gap) + gap, 3)
    return np.stack(
        [
            np.stack(
                [picture[gap + r * (side + gap) :][:side, gap + c * (side + gap) :][:, :side] for c in range(cols)]
            )
            for r in range(rows)
        ]
    )


def test_each_row_holds_the_sources_mask_composite_blur_and_mix(tmp_path, tiny_subset):
    generator = make_generator(tmp_path / "g.pt", tiny_subset)
    grid = load_script().sample_grid(generator, tiny_subset, blur_sigma=0.0, rows=4, n=3, seed=0)
    cells = tiles(grid, rows=4, cols=3 + 4, res=16)
    small = cells[..., ::4, ::4, :]  # back to 16 px: the tiles are nearest-neighbour upscaled by 4
    train = read_subset(tiny_subset).train.images
    known = {bytes(im) for im in train} | {bytes(im[:, ::-1].copy()) for im in train}
    assert all(bytes(small[r, c].copy()) in known for r in range(4) for c in range(3))  # subset images (mirrored)
    assert np.array_equal(small[:, 4], small[:, 5])  # the blur control at sigma 0 is the pixel composite
    assert not np.array_equal(small[:, 6], small[:, 4])  # the generator's mix is not the composite


def test_the_command_reads_the_blur_sigma_from_a_blur_set(tmp_path, tiny_subset):
    generator = make_generator(tmp_path / "g.pt", tiny_subset)
    blur_set = tmp_path / "blur"
    blur_set.mkdir()
    (blur_set / "manifest.json").write_text('{"synthesis": {"blur_sigma": 0.5}}')
    out = tmp_path / "grid.png"
    args = ["--generator", generator, "--subset", tiny_subset, "--blur-set", blur_set, "--rows", "2", "--n", "2"]
    done = subprocess.run(
        [sys.executable, SCRIPT, *map(str, args), "--out", str(out)], capture_output=True, text=True, check=True
    )
    assert "blur sigma 0.5 px" in done.stdout
    assert np.asarray(Image.open(out)).shape == (2 * 66 + 2, 6 * 66 + 2, 3)
