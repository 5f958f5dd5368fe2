"""README's sample grid: per row, the N sources of one synthetic sample, its mask coloured by source, the pixel
composite (pixelmix), the blur control (pixelmix-blur) and the generator's mix (hydramix).

    python benchmarks/sample_grid.py --generator G.pt --subset SUBSET --blur-sigma 0.62 --out docs/img/x.png

Every column is rendered by the synthesis engine for the same sample ids, seed and N, so a row is exactly what
the three sets hold for that sample (a blur set's sigma is in its manifest: ``synthesis.blur_sigma``). The first
``--rows`` ids are taken, one per class (ids interleave the classes). Images smaller than 64 px are scaled up
(nearest) so a person can see them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.core.config import from_dict
from pipeline.data.subsets import read_subset
from pipeline.generator.files import load_generator
from pipeline.generator.masks import MaskConfig, colorize
from pipeline.synthesis.engine import SynthConfig, Synthesizer


def sample_grid(
    generator: Path, subset: Path, blur_sigma: float, rows: int = 8, n: int = 4, seed: int = 0
) -> np.ndarray:
    """(H, W, 3) uint8 picture of ``rows`` samples with ``n`` sources each (see the module docstring)."""
    train = read_subset(subset).train
    g, meta = load_generator(generator)
    masks_cfg = from_dict(MaskConfig, meta["masks"], where="generator file: masks")
    cfg = SynthConfig(n_per_class=rows, seed=seed, n_sources=(n, n), device="cpu", precision="fp32")
    cpu = torch.device("cpu")
    made = {
        mode: Synthesizer(train, replace(cfg, mode=mode, blur_sigma=sigma), masks_cfg, g, cpu, torch.float32)
        for mode, sigma in (("generator", 0.0), ("pixel", 0.0), ("blur", blur_sigma))
    }
    ids = np.arange(min(rows, made["pixel"].total))
    plan = made["pixel"].plan(ids)
    masks = made["pixel"].masks(plan)  # (B, N, H, W)
    flipped = plan["flipped"]
    tiles = []
    for i in range(n):  # the sources as the mix saw them (mirrored where it mirrored them)
        src = train.images[plan["rows"][:, i]]
        tiles.append(np.where(flipped[:, i, None, None, None], src[:, :, ::-1], src))
    tiles.append(colorize(masks).permute(0, 2, 3, 1).numpy())
    tiles += [np.stack([r.image for r in made[mode].render(ids)]) for mode in ("pixel", "blur", "generator")]
    res = train.images.shape[1]
    scale = max(1, 64 // res)
    side, gap = res * scale, 2
    canvas = np.full((len(ids) * (side + gap) + gap, len(tiles) * (side + gap) + gap, 3), 255, np.uint8)
    for col, tile in enumerate(tiles):
        big = tile.repeat(scale, 1).repeat(scale, 2)
        for row in range(len(ids)):
            y, x = gap + row * (side + gap), gap + col * (side + gap)
            canvas[y : y + side, x : x + side] = big[row]
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, required=True)
    parser.add_argument("--subset", type=Path, required=True)
    sigma = parser.add_mutually_exclusive_group(required=True)
    sigma.add_argument("--blur-sigma", type=float, help="The blur control's sigma in px.")
    sigma.add_argument("--blur-set", type=Path, help="A pixelmix-blur set: its manifest's sigma is used.")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--n", type=int, default=4, help="Sources per sample.")
    parser.add_argument("--seed", type=int, default=0, help="Dataset seed (as synthesize --seed).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.blur_set is not None:
        args.blur_sigma = json.loads((args.blur_set / "manifest.json").read_text())["synthesis"]["blur_sigma"]
    picture = sample_grid(args.generator, args.subset, args.blur_sigma, args.rows, args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out, optimize=True)
    print(f"wrote {args.out}: {picture.shape[0]}x{picture.shape[1]} px, blur sigma {args.blur_sigma} px")


if __name__ == "__main__":
    main()
