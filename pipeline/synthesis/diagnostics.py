"""Set diagnostics without a pretrained network: high-frequency share, within-class diversity, largest source share.

They compare a synthetic set with the real subset it was made from (and with the blur control of
``pipeline/synthesis/blur.py``). Images are (M, H, W, 3) RGB, uint8 or float in [0, 1]; everything is computed in
float64 on pixel values x in [0, 1]. Definitions (docs/diagnostics.md gives the reasoning):

**High-frequency share** of one image x with channels c. With u the 2-D Hann window
u[h, w] = a_h * a_w, a = ``np.hanning(H + 2)[1:-1]`` (no zero rows), mu_c = sum(u * x_c) / sum(u) the
window-weighted channel mean, F_c the 2-D DFT of u * (x_c - mu_c) at frequencies (f_y, f_x) from
``np.fft.fftfreq`` (cycles/px, in [-0.5, 0.5)) and r = sqrt(f_y^2 + f_x^2):

    hf(x) = sum_{c, r > cutoff} |F_c(f)|^2 / sum_{c, f} |F_c(f)|^2          (0 for a constant image)

The mean (the DC term) is removed because it carries no structure and would dominate the total; taking it
with the window's weights makes the windowed DC exactly 0. The window is a departure from a plain DFT on
purpose: the DFT treats the image as periodic, and the jump between opposite edges of a natural image puts
power at every frequency. On CIFAR-10 images the plain DFT's share bottoms out near 0.016 under blur (against
0.076 unblurred) and then rises again with sigma; with the window it falls to ~1e-4. White noise keeps a flat
expected spectrum under any window, so hf = 1 - pi * cutoff^2 (0.804 at 0.25).

**Within-class diversity.** For class k, X_k = its first ``max_per_class`` images in array order, D = H*W*3:

    div_k = mean_{i < j in X_k} sqrt( (1/D) * sum_d (x_i[d] - x_j[d])^2 )      (RMS distance, [0, 1] units)
    diversity = mean over classes with |X_k| >= 2 of div_k                    (NaN when there is none)

**Largest source share** of a mix with masks w_n (B, N, H, W) summing to 1 over n per pixel:

    lss = max_n (1/(H*W)) * sum_{h,w} w_n[h, w]                               (1/N: even split; 1: one source)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.imageset import ImageSet
from pipeline.synthesis.shards.reader import iter_shard

HF_CUTOFF = 0.25  # cycles/px: the inner half of the Nyquist band, radially
_CHUNK_VALUES = 1 << 22  # pixel values per FFT batch (~32 MiB of float64 input, ~64 MiB complex output)


def _as_unit_float(images: np.ndarray) -> np.ndarray:
    """(M, H, W, 3) uint8 or float in [0, 1] -> float64 in [0, 1], checked for shape."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (M, H, W, 3), got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float64) / 255.0
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float64, copy=False)
    raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")


def high_frequency_share(images: np.ndarray, cutoff: float = HF_CUTOFF) -> np.ndarray:
    """Per image, the share of (DC-free, Hann-windowed) spectral power at radial frequency above ``cutoff`` cycles/px.

    images: (M, H, W, 3) uint8, or float in [0, 1]. Returns (M,) float64 in [0, 1]; a constant image gives 0.
    """
    x = _as_unit_float(images)
    m, h, w, _ = x.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    high = np.sqrt(fy**2 + fx**2) > cutoff  # (H, W)
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1])[:, :, None]  # (H, W, 1)
    out = np.zeros(m, dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // (h * w * 3))
    for start in range(0, m, chunk):
        part = x[start : start + chunk]
        mean = (part * window).sum(axis=(1, 2), keepdims=True) / window.sum()  # (m, 1, 1, 3)
        part = (part - mean) * window  # windowed DC is exactly 0; edges fade so the DFT sees no wrap-around jump
        power = (np.abs(np.fft.fft2(part, axes=(1, 2))) ** 2).sum(-1)  # (m, H, W), summed over channels
        total = power.sum(axis=(1, 2))
        above = power[:, high].sum(-1)
        # A constant image has zero power; report 0 rather than 0/0. The floor is far below one 8-bit step.
        out[start : start + chunk] = np.where(total > 1e-20, above / np.maximum(total, 1e-20), 0.0)
    return out


def within_class_diversity(images: np.ndarray, labels: np.ndarray, max_per_class: int = 200) -> float:
    """Mean over classes of the mean pairwise RMS pixel distance ([0, 1] units) within the class.

    Each class uses its first ``max_per_class`` images in array order (callers pass class-balanced prefixes);
    classes with fewer than 2 images are skipped, and with none left the result is NaN.
    """
    x = _as_unit_float(images)
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must be ({x.shape[0]},), got shape {labels.shape}")
    if max_per_class < 2:
        raise ValueError(f"max_per_class must be >= 2, got {max_per_class}")
    flat = x.reshape(x.shape[0], -1)
    d = flat.shape[1]
    per_class = []
    for k in np.unique(labels):
        members = flat[np.flatnonzero(labels == k)[:max_per_class]]
        n = members.shape[0]
        if n < 2:
            continue
        # Centring leaves distances unchanged and keeps the Gram identity accurate for near-identical images.
        members = members - members.mean(0, keepdims=True)
        gram = members @ members.T  # (n, n)
        norms = np.diag(gram)
        sq = np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)  # rounding can dip below 0
        i, j = np.triu_indices(n, k=1)
        per_class.append(float(np.sqrt(sq[i, j] / d).mean()))
    return float(np.mean(per_class)) if per_class else math.nan


def largest_source_share(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, N, H, W) mixing weights (summing to 1 over N per pixel) -> (B,) float64: each mix's largest
    per-source area share, max_n mean_{h,w} w_n."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().to("cpu", torch.float64).numpy()
    masks = np.asarray(masks, dtype=np.float64)
    if masks.ndim != 4:
        raise ValueError(f"masks must be (B, N, H, W), got shape {masks.shape}")
    return masks.mean(axis=(2, 3)).max(axis=1)


def set_diagnostics(
    images: np.ndarray,
    labels: np.ndarray,
    largest_share: np.ndarray | None = None,
    max_per_class: int = 200,
) -> dict[str, Any]:
    """All set diagnostics of one image set, as a JSON-able dict.

    images: (M, H, W, 3) uint8 or float in [0, 1]; labels: (M,); largest_share: (B,) from
    ``largest_source_share`` for a synthetic set (None for real images or controls without masks).
    Returns {"hf_share", "hf_share_std" (population std over images), "hf_cutoff", "diversity",
    "largest_source_share" (mean, or None), "n_images", "max_per_class"}.
    """
    shares = high_frequency_share(images, HF_CUTOFF)
    if shares.size == 0:
        raise ValueError("set_diagnostics needs at least one image")
    lss = None
    if largest_share is not None:
        largest_share = np.asarray(largest_share, dtype=np.float64)
        if largest_share.ndim != 1 or largest_share.size == 0:
            raise ValueError(f"largest_share must be a non-empty (B,) array, got shape {largest_share.shape}")
        lss = float(largest_share.mean())
    return {
        "hf_share": float(shares.mean()),
        "hf_share_std": float(shares.std()),
        "hf_cutoff": HF_CUTOFF,
        "diversity": within_class_diversity(images, labels, max_per_class),
        "largest_source_share": lss,
        "n_images": int(shares.size),
        "max_per_class": int(max_per_class),
    }


# Synthetic sets are measured on their first DIAGNOSTIC_PREFIX samples per class (sample s has class s % C, so
# that is the first C * DIAGNOSTIC_PREFIX ids): enough for stable means, and cheap next to a 5000-per-class set.
DIAGNOSTIC_PREFIX = 200


def describe_dataset(directory: Path, shard_names: list[str], real: ImageSet, per_class: int) -> dict[str, Any]:
    """Diagnostics of a written synthetic dataset next to those of its real subset.

    directory / shard_names: the dataset's shards in order (as ``pipeline.synthesis.shards.dataset_writer``'s
    ``write_dataset`` passes them); real: the subset's train images. Reads only the shards that hold the first
    ``per_class`` samples per class.
    Returns {"synthetic": set_diagnostics(...), "real": set_diagnostics(...), "prefix_per_class": per_class}.
    """
    wanted = per_class * len(real.class_names)
    images, labels, shares = [], [], []
    for name in shard_names:
        for sample in iter_shard(directory / name):
            images.append(sample.image)
            labels.append(sample.label)
            if "largest_share" in sample.meta:
                shares.append(sample.meta["largest_share"])
            if len(images) == wanted:
                break
        if len(images) == wanted:
            break
    largest = np.asarray(shares) if len(shares) == len(images) else None
    return {
        "synthetic": set_diagnostics(np.stack(images), np.asarray(labels), largest, per_class),
        "real": set_diagnostics(real.images, real.labels, None, per_class),
        "prefix_per_class": per_class,
    }
