"""Mixing masks: which source image each pixel of a mix comes from.

A mask batch is a float32 tensor (B, N, H, W) at image resolution whose N weights sum to 1 at every pixel;
slot i belongs to the i-th source of the mix, padding slots (source row -1) are exactly 0. Two kinds:

- ``segmentation`` (default): Felzenszwalb superpixels, computed once per source image (``segment_images``),
  never in the hot loop. Per mix, one of its N sources is drawn as the *base*; each of the base's superpixels
  is given to one of the N sources (``docs/masks.md`` says why this rule and not an intersection of all N).
- ``grid``: k x k cells (k drawn per mix) on a grid shifted by a random sub-cell offset, cells to sources.
- ``chimeramix`` (N = 2 only): ChimeraMix's rule. The base source's superpixels; a random contiguous range of
  its segment ids is taken from the other source, the rest from the base.
- ``chimeramix-grid`` (N = 2 only): ChimeraMix's grid variant, an unshifted k x k grid (ChimeraMix: 4 x 4)
  whose cells each come from one of the two sources at random.
- ``ranges``: ChimeraMix's rule generalised to N. The base source's superpixels, ordered by id, are cut into N
  contiguous id ranges at random cut points; a random order of the N sources gives each range its source.

In the first two kinds regions are assigned by a random permutation first (so every source gets at least one region
whenever there are at least N regions) and uniformly at random after that; ``base_share`` then gives the base
whole superpixels back until it owns that share of the image (segmentation only). Hard (one-hot) masks by default;
``soft`` smooths them with a Gaussian and renormalises. All randomness comes from a counter-based hash of a
per-row seed, so a row's mask depends only on its own source rows and seed, never on the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb

from pipeline.core.config import recorded_when_set
from pipeline.core.progress import tqdm

MaskKind = Literal["segmentation", "grid", "chimeramix", "chimeramix-grid", "ranges"]
MASK_KINDS: tuple[str, ...] = ("segmentation", "grid", "chimeramix", "chimeramix-grid", "ranges")
# ChimeraMix's rules mix exactly two images.
PAIR_KINDS: frozenset[str] = frozenset({"chimeramix", "chimeramix-grid"})
# Kinds whose masks follow a source's superpixels (the others need only the image size).
SEGMENT_KINDS: frozenset[str] = frozenset({"segmentation", "chimeramix", "ranges"})

_MASK53 = np.uint64((1 << 53) - 1)  # per-sample seeds stay exact in JSON (float64 mantissa)
# The stream ids of a per-sample seed (``row_uniforms`` / ``row_randint``): each random decision of a row draws
# from its own stream, so adding a decision moves no other. Every dataset's bytes depend on these values: add new
# ids, never renumber. 1-8: the mask (this module); 101-104: the mix's sources (``pipeline.generator.sources``).
STREAM_BASE = 1  # which source is the base whose superpixels are assigned
STREAM_KEYS = 2  # the random permutation of regions (every source gets one)
STREAM_FILL = 3  # the owners of the remaining regions / grid cells
STREAM_GRID = 4  # grid k and its sub-cell shift
STREAM_RANGE = 5  # chimeramix: the contiguous range of segment ids from the other source
STREAM_BASE_SHARE = 6  # base_share: the order in which superpixels go back to the base
STREAM_CUTS = 7  # ranges: the cut points between the N contiguous ranges of segment ids
STREAM_RANGE_OWNERS = 8  # ranges: which source owns each range (a random order of the N)
STREAM_N_SOURCES = 101  # N, drawn in generator.masks.n_sources / synthesize.n_sources
STREAM_SOURCES = 102  # the N distinct images of the class
STREAM_FLIPS = 103  # their horizontal flips
STREAM_CLASS = 104  # the class of a training mix (synthesis assigns classes by sample id)


@dataclass(frozen=True)
class MaskConfig:
    """How mixing masks are drawn (params section ``generator.masks``; ``synthesize`` may override ``kind``).

    kind: "segmentation" (Felzenszwalb superpixels of a base source), "grid" (shifted k x k cells), or
        ChimeraMix's two-image rules "chimeramix" (a contiguous range of the base's segment ids from the other
        source) and "chimeramix-grid" (unshifted k x k cells, each from one of the two); these need N = 2.
        "ranges": the base's segment ids cut into N contiguous ranges, one per source (ChimeraMix's rule for N).
    n_sources: (min, max) number of images per mix, inclusive, min >= 2; N is drawn per mix in this range.
    scale, sigma, min_size: ``skimage.segmentation.felzenszwalb`` arguments (per dataset / resolution).
    grid_cells: (min, max) k for grid masks, inclusive.
    soft: smooth the hard masks with a Gaussian of ``soft_sigma`` pixels, then renormalise to sum 1.
    base_share: segmentation masks only (other kinds ignore it, as segmentation ignores grid_cells): the base
        source owns at least this fraction of the image, in [0, 1); 0 (default) sets no floor.
    """

    kind: MaskKind = "segmentation"
    n_sources: tuple[int, int] = (2, 4)
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 20
    grid_cells: tuple[int, int] = (2, 4)
    soft: bool = False
    soft_sigma: float = 1.0
    base_share: float = recorded_when_set(0.0)  # added after generator files existed: recorded only when set

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MASK_KINDS)}, got {self.kind!r}")
        _check_range("n_sources", self.n_sources, lowest=2)
        if self.kind in PAIR_KINDS and tuple(self.n_sources) != (2, 2):
            raise ValueError(f"mask kind {self.kind!r} mixes exactly two images: n_sources must be [2, 2]")
        _check_range("grid_cells", self.grid_cells, lowest=1)
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {self.min_size}")
        if not self.soft_sigma > 0:
            raise ValueError(f"soft_sigma must be > 0, got {self.soft_sigma}")
        if not 0 <= self.base_share < 1:
            raise ValueError(f"base_share must be in [0, 1), got {self.base_share}")


def _check_range(name: str, value: tuple[int, ...], lowest: int) -> None:
    if len(value) != 2:
        raise ValueError(f"{name} must be [min, max], got {list(value)}")
    lo, hi = value
    if lo < lowest or hi < lo:
        raise ValueError(f"{name} must satisfy {lowest} <= min <= max, got {list(value)}")


# ----------------------------------------------------------------------------------------------------
# Counter-based randomness: vectorised, and each row's numbers depend on its own seed only.


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on a uint64 array (wrapping arithmetic), a well-mixed bijection."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def derive_seeds(seed: int, ids: np.ndarray) -> np.ndarray:
    """(B,) uint64 per-item seeds in [0, 2**53) from one int ``seed`` and item ``ids`` (e.g. sample ids)."""
    base = _splitmix64(np.array([seed % (1 << 64)], dtype=np.uint64))
    return _splitmix64(base + np.asarray(ids, dtype=np.uint64).reshape(-1)) & _MASK53


def row_uniforms(seeds: np.ndarray, n: int, stream: int) -> np.ndarray:
    """(B, n) float64 uniforms in [0, 1): number k of stream ``stream`` of each row's seed."""
    keyed = _splitmix64(np.asarray(seeds, dtype=np.uint64) ^ _splitmix64(np.array([stream], dtype=np.uint64)))
    counters = np.arange(n, dtype=np.uint64)[None, :]
    bits = _splitmix64(keyed[:, None] + counters) >> np.uint64(11)
    return bits.astype(np.float64) * (1.0 / (1 << 53))


def row_randint(seeds: np.ndarray, high: np.ndarray, n: int, stream: int) -> np.ndarray:
    """(B, n) int64 in [0, high[b]) per row (``high`` (B,) >= 1)."""
    high = np.asarray(high, dtype=np.int64)[:, None]
    return np.minimum((row_uniforms(seeds, n, stream) * high).astype(np.int64), high - 1)


# ----------------------------------------------------------------------------------------------------


def segment_images(images: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """Felzenszwalb superpixels of every image, once.

    images: (M, H, W, 3) uint8 RGB. Returns (M, H, W) int32 labels 0..S_m-1 (contiguous per image).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (M, H, W, 3) uint8, got {images.shape} {images.dtype}")
    out = np.empty(images.shape[:3], dtype=np.int32)
    for i in tqdm(range(len(images)), desc="segment", unit="img", disable=len(images) < 2000, leave=False):
        labels = felzenszwalb(images[i], scale=cfg.scale, sigma=cfg.sigma, min_size=cfg.min_size)
        # Relabel to 0..S-1 so the sampler can size its per-region tables from the maximum.
        out[i] = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    return out


class MaskSampler:
    """Draws mask batches for mixes of rows of one segmented image set.

    segments: (M, H, W) integer labels 0..S_m-1 per image, as ``segment_images`` returns them (``grid`` masks
        use only the shape).
    """

    def __init__(self, segments: np.ndarray, cfg: MaskConfig) -> None:
        if segments.ndim != 3:
            raise ValueError(f"segments must be (M, H, W), got {segments.shape}")
        self.cfg = cfg
        self.height, self.width = int(segments.shape[1]), int(segments.shape[2])
        if cfg.kind in ("grid", "chimeramix-grid") and cfg.grid_cells[1] > min(self.height, self.width):
            raise ValueError(f"grid_cells max {cfg.grid_cells[1]} exceeds the image size {self.height}x{self.width}")
        # numpy, not torch, for the small integer gathers: several times faster at these sizes on CPU.
        self._segments = np.ascontiguousarray(segments, dtype=np.int32)  # (M, H, W)
        self._n_segments = self._segments.reshape(len(segments), -1).max(1).astype(np.int64) + 1  # (M,)
        self._n_regions = int(self._n_segments.max()) if len(segments) else 1
        self._kernel = _gaussian_kernel(cfg.soft_sigma) if cfg.soft else None

    @classmethod
    def of_images(cls, images: np.ndarray, cfg: MaskConfig) -> MaskSampler:
        """The sampler of (M, H, W, 3) uint8 ``images``: their superpixels computed once where ``cfg.kind``
        follows them (``SEGMENT_KINDS``); the other kinds need only the image size."""
        if cfg.kind in SEGMENT_KINDS:
            return cls(segment_images(images, cfg), cfg)
        return cls(np.zeros(images.shape[:3], dtype=np.int32), cfg)

    def sample(
        self, source_rows: np.ndarray, seed: int | np.ndarray, flipped: np.ndarray | None = None
    ) -> torch.Tensor:
        """Masks for B mixes.

        source_rows: (B, N) int64 row positions into the segmented images; -1 marks padding slots, which must
            come after the row's real sources (a row needs at least one; one source gives an all-ones mask).
        seed: one int for the batch (row b then uses ``derive_seeds(seed, [b])``), or (B,) per-row seeds,
            which make each row independent of the batch it is in.
        flipped: optional (B, N) bool, True where that source is used horizontally flipped; the base source's
            segmentation is flipped to match (segmentation masks only).
        Returns (B, N, H, W) float32 on the CPU: weights >= 0 summing to 1 over N at each pixel, 0 on padding.
        """
        rows = np.asarray(source_rows, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] < 1:
            raise ValueError(f"source_rows must be (B, N), got {rows.shape}")
        b, n_max = rows.shape
        valid = rows >= 0
        n_valid = valid.sum(1)
        if b and (n_valid.min() < 1 or (valid != (np.arange(n_max)[None, :] < n_valid[:, None])).any()):
            raise ValueError("each row needs at least one source, and padding (-1) only after its sources")
        if b and rows.max() >= len(self._segments):
            raise ValueError(f"source row {rows.max()} is out of range for {len(self._segments)} segmented images")
        seeds = derive_seeds(seed, np.arange(b)) if np.isscalar(seed) else np.asarray(seed, dtype=np.uint64)
        if seeds.shape != (b,):
            raise ValueError(f"seed must be an int or one seed per row ({b}), got shape {seeds.shape}")

        kind = self.cfg.kind
        if kind in PAIR_KINDS and b and (n_valid != 2).any():
            raise ValueError(f"mask kind {kind!r} mixes exactly two sources per row")
        if kind == "segmentation":
            regions, present, base_slot = self._base_segments(rows, n_valid, seeds, flipped)
            owner_of_region = _assign_regions(present, n_valid, seeds)  # (B, R) slot index per region
            if self.cfg.base_share > 0:
                owner_of_region = _keep_base_share(regions, owner_of_region, present, base_slot, self.cfg, seeds)
            owner = _paint(regions, owner_of_region)  # (B, H, W) slot index per pixel
        elif kind == "grid":
            regions, present = self._grid_cells(seeds)
            owner = _paint(regions, _assign_regions(present, n_valid, seeds))
        elif kind == "chimeramix":
            regions, present, base_slot = self._base_segments(rows, n_valid, seeds, flipped)
            owner = _contiguous_range_owner(regions, present.sum(1), base_slot, seeds)
        elif kind == "ranges":
            regions, present, _ = self._base_segments(rows, n_valid, seeds, flipped)
            owner = _paint(regions, _range_owners(present, n_valid, n_max, seeds))
        else:
            owner = self._binary_cells(seeds)
        masks = owner[:, None] == np.arange(n_max, dtype=owner.dtype)[None, :, None, None]  # (B, N, H, W)
        masks = torch.from_numpy(masks.astype(np.float32))
        if self._kernel is not None:
            masks = _smooth(masks, self._kernel)
        return masks

    def _base_segments(
        self, rows: np.ndarray, n_valid: np.ndarray, seeds: np.ndarray, flipped: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Superpixels of each row's base source (drawn uniformly among its N sources).

        Returns (B, H, W) int32 labels, (B, R) bool: which labels exist in that row, and (B,) the base's slot.
        """
        base_slot = row_randint(seeds, n_valid, 1, STREAM_BASE)[:, 0]
        base = rows[np.arange(len(rows)), base_slot]
        regions = self._segments[base]
        if flipped is not None:
            flip = np.asarray(flipped, dtype=bool)[np.arange(len(rows)), base_slot]
            regions[flip] = regions[flip, :, ::-1]
        present = np.arange(self._n_regions)[None, :] < self._n_segments[base][:, None]
        return regions, present, base_slot

    def _binary_cells(self, seeds: np.ndarray) -> np.ndarray:
        """ChimeraMix's grid: an unshifted k x k grid (k drawn in grid_cells), each cell from source 0 or 1
        with probability 1/2. Returns (B, H, W) int32 slot indices."""
        lo, hi = self.cfg.grid_cells
        k = lo + np.minimum((row_uniforms(seeds, 1, STREAM_GRID)[:, 0] * (hi - lo + 1)).astype(np.int64), hi - lo)
        ys = (np.arange(self.height)[None, :] * k[:, None]) // self.height  # (B, H) cell row
        xs = (np.arange(self.width)[None, :] * k[:, None]) // self.width  # (B, W) cell column
        cells = ys[:, :, None] * hi + xs[:, None, :]  # (B, H, W) ids < hi * hi
        owner_of_cell = (row_uniforms(seeds, hi * hi, STREAM_FILL) < 0.5).astype(np.int32)  # (B, hi * hi)
        return np.take_along_axis(owner_of_cell, cells.reshape(len(seeds), -1), axis=1).reshape(cells.shape)

    def _grid_cells(self, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell ids of a randomly shifted k x k grid per row: (B, H, W) int32 ids and (B, R) bool presence."""
        lo, hi = self.cfg.grid_cells
        u = row_uniforms(seeds, 3, STREAM_GRID)  # k, shift y, shift x
        k = lo + np.minimum((u[:, 0] * (hi - lo + 1)).astype(np.int64), hi - lo)
        cell_h, cell_w = self.height / k, self.width / k  # (B,) float cell sizes (>= 1 pixel)
        # A shift in [0, cell) moves the lines; the cells cut at the borders are partial cells.
        ys = ((np.arange(self.height)[None, :] + 0.5 + u[:, 1:2] * cell_h[:, None]) // cell_h[:, None]).astype(np.int32)
        xs = ((np.arange(self.width)[None, :] + 0.5 + u[:, 2:3] * cell_w[:, None]) // cell_w[:, None]).astype(np.int32)
        side = hi + 1  # at most k + 1 cells per axis
        cells = ys[:, :, None] * side + xs[:, None, :]
        # Cells are >= 1 pixel, so the indices along an axis run 0..last without gaps.
        ids = np.arange(side * side)
        cy, cx = ids[None, :] // side, ids[None, :] % side
        present = (cy >= ys[:, :1]) & (cy <= ys[:, -1:]) & (cx >= xs[:, :1]) & (cx <= xs[:, -1:])
        return cells, present


def _assign_regions(present: np.ndarray, n_sources: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Give every region of each row to one of its sources; returns (B, R) int32 slot indices per region id.

    present: (B, R) bool, which region ids exist in that row. The present regions are put in a random order; the
    first N of them go to sources 0..N-1 (every source gets a region when there are at least N), the rest to
    sources drawn uniformly.
    """
    n_regions = present.shape[1]
    keys = np.where(present, row_uniforms(seeds, n_regions, STREAM_KEYS), 2.0)  # absent ids sort last
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    fill = row_randint(seeds, n_sources, n_regions, STREAM_FILL)
    return np.where(rank < n_sources[:, None], rank, fill).astype(np.int32)  # (B, R)


def _paint(regions: np.ndarray, owner_of_region: np.ndarray) -> np.ndarray:
    """(B, H, W) int region ids < R and (B, R) owners per region id -> (B, H, W) int32 slot index per pixel."""
    b, n_regions = owner_of_region.shape
    flat = regions.reshape(b, -1) + (np.arange(b, dtype=np.int32) * n_regions)[:, None]
    return owner_of_region.reshape(-1)[flat].reshape(regions.shape)


def _region_areas(regions: np.ndarray, n_regions: int) -> np.ndarray:
    """(B, H, W) int region ids < R -> (B, R) int64 pixel count of each region id."""
    b = len(regions)
    flat = regions.reshape(b, -1) + (np.arange(b, dtype=np.int64) * n_regions)[:, None]
    return np.bincount(flat.reshape(-1), minlength=b * n_regions).reshape(b, n_regions)


def _keep_base_share(
    regions: np.ndarray,
    owner_of_region: np.ndarray,
    present: np.ndarray,
    base_slot: np.ndarray,
    cfg: MaskConfig,
    seeds: np.ndarray,
) -> np.ndarray:
    """Give whole superpixels back to the base until it owns at least ``cfg.base_share`` of the image.

    regions: (B, H, W) the base's segment ids; owner_of_region: (B, R) slot per id (``_assign_regions``);
    present: (B, R); base_slot: (B,). The other sources' superpixels go back in a random order (stream
    STREAM_BASE_SHARE), each source's last one after all the others, so a source loses its only region only
    when the floor cannot be met otherwise. Returns the new (B, R) owners; the base's share is >= the floor.
    """
    height, width = regions.shape[1:]
    area = _region_areas(regions, present.shape[1])  # (B, R)
    is_base = owner_of_region == base_slot[:, None]
    need = cfg.base_share * height * width - (area * is_base).sum(1)  # (B,) pixels the base still lacks
    movable = present & ~is_base
    keys = np.where(movable, row_uniforms(seeds, present.shape[1], STREAM_BASE_SHARE), np.inf)
    # A source's "last" region: the one with its smallest key. Keys are distinct 53-bit draws: one per source.
    n_slots = int(owner_of_region.max()) + 1
    per_slot = np.where(owner_of_region[:, :, None] == np.arange(n_slots), keys[:, :, None], np.inf)  # (B, R, N)
    last = movable & (keys == np.take_along_axis(per_slot.min(1), owner_of_region.astype(np.int64), 1))
    order = np.argsort(np.where(movable, keys + last, 3.0), axis=1, kind="stable")  # movable first, lasts last
    moved_area = np.take_along_axis(area * movable, order, 1)
    before = np.cumsum(moved_area, 1) - moved_area  # (B, R) area already moved before each one
    take = np.zeros_like(movable)
    np.put_along_axis(take, order, np.take_along_axis(movable, order, 1) & (before < need[:, None]), 1)
    return np.where(take, base_slot[:, None], owner_of_region).astype(np.int32)


def _range_owners(present: np.ndarray, n_sources: np.ndarray, n_slots: int, seeds: np.ndarray) -> np.ndarray:
    """The ``ranges`` rule: (B, R) int32 slot per segment id of the base.

    present: (B, R) the base's ids 0..S-1. min(N, S) contiguous id ranges: N - 1 cuts (fewer when S < N) drawn
    among the S - 1 gaps between consecutive ids (stream STREAM_CUTS), without replacement, so no range is empty;
    range r goes to the r-th source of a random order of the N (stream STREAM_RANGE_OWNERS), so every source
    gets a range when S >= N and no source (the base included) is tied to a position in the id order.
    """
    b, n_regions = present.shape
    n_segments = present.sum(1)  # (B,)
    gaps = np.arange(1, n_regions)  # gap j lies between ids j - 1 and j
    keys = np.where(gaps[None, :] < n_segments[:, None], row_uniforms(seeds, n_regions - 1, STREAM_CUTS), 2.0)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    cut = (rank < (n_sources - 1)[:, None]) & (keys < 2.0)  # (B, R - 1): min(N, S) - 1 cuts at existing gaps
    range_of_id = np.concatenate([np.zeros((b, 1), dtype=np.int64), np.cumsum(cut, 1)], 1)  # (B, R) in 0..N-1
    slot_keys = np.where(
        np.arange(n_slots)[None, :] < n_sources[:, None], row_uniforms(seeds, n_slots, STREAM_RANGE_OWNERS), 2.0
    )
    owner_of_range = np.argsort(slot_keys, axis=1, kind="stable")  # (B, N): padding slots come last, never used
    return np.take_along_axis(owner_of_range, range_of_id, 1).astype(np.int32)


def _contiguous_range_owner(
    regions: np.ndarray, n_regions: np.ndarray, base_slot: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    """ChimeraMix's segmentation rule for two sources: (B, H, W) int32 slot indices.

    regions: (B, H, W) the base's segment ids 0..S_b-1; n_regions: (B,) S_b; base_slot: (B,) 0 or 1. A range
    of L contiguous ids (L uniform in [1, S_b - 1], its start uniform) comes from the other source, so both
    sources appear whenever the base has two or more segments; a one-segment base keeps the whole image.
    """
    u = row_uniforms(seeds, 2, STREAM_RANGE)
    span = np.maximum(n_regions - 1, 0)  # largest range that leaves the base a segment
    length = np.where(span > 0, 1 + np.minimum((u[:, 0] * span).astype(np.int64), span - 1), 0)
    start = np.minimum((u[:, 1] * (n_regions - length + 1)).astype(np.int64), n_regions - length)
    inside = (regions >= start[:, None, None]) & (regions < (start + length)[:, None, None])
    other = 1 - base_slot[:, None, None]
    return np.where(inside, other, base_slot[:, None, None]).astype(np.int32)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur_matrix(size: int, kernel: torch.Tensor) -> torch.Tensor:
    """(size, size) matrix applying the 1-D ``kernel`` with replicate padding: a blur is then two matmuls."""
    r = kernel.numel() // 2
    taps = (torch.arange(size)[:, None] + torch.arange(-r, r + 1)[None, :]).clamp(0, size - 1)  # (size, 2r+1)
    out = torch.zeros(size, size)
    out.scatter_add_(1, taps, kernel.expand(size, -1).contiguous())
    return out


def _smooth(masks: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur per slot (replicate padding), renormalised to sum 1; zero slots stay zero."""
    h, w = masks.shape[-2:]
    blurred = _blur_matrix(h, kernel) @ masks @ _blur_matrix(w, kernel).T  # rows are convex weights: >= 0
    return blurred / blurred.sum(1, keepdim=True)


def pixel_composite(sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masks applied to pixels: (B, N, 3, H, W) sources and (B, N, H, W) image-resolution masks -> (B, 3, H, W)
    per-pixel mask-weighted sum (for hard masks: each pixel copied from the source that owns it; padding slots
    weigh 0). The generator's mix target, the fidelity reference and the pixel / blur controls; any value range
    (the sum is linear), in the sources' dtype."""
    return (sources * masks.unsqueeze(2)).sum(dim=1)


def to_feature_resolution(masks: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Area downsample (B, N, H, W) -> (B, N, H/factor, W/factor); sums over N stay 1, zero slots stay 0."""
    h, w = masks.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"mask size {h}x{w} is not divisible by {factor}")
    return F.avg_pool2d(masks, factor) if factor > 1 else masks


def colorize(masks: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) masks -> (B, 3, H, W) uint8 picture, one fixed colour per source slot (soft: blended)."""
    palette = torch.tensor(_PALETTE, dtype=torch.float32)
    n = masks.shape[1]
    colours = palette[torch.arange(n) % len(palette)]  # (N, 3)
    rgb = torch.einsum("bnhw,nc->bchw", masks.float(), colours)
    return rgb.round().clamp(0, 255).to(torch.uint8)


# Tableau-10: distinguishable, and source 0/1/2 read as blue/orange/green in every grid.
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
