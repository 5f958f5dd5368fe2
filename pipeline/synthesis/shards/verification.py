"""Verifying a dataset directory: its files against its manifest, and the manifest against itself.

Where it sits: subset + generator -> **shards** -> score / classifier; ``hydramix verify`` (``stages/verify.py``)
runs ``verify_dataset`` on a written dataset, and its problems point back to re-running ``synthesize``. What it
proves and what it cannot: ``docs/shards.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.synthesis.shards.format import CARD, PLAN, SHARD_RE, Sample, n_shards, shard_name, shard_sample_ids
from pipeline.synthesis.shards.reader import inside, iter_shard, prefix_of, read_manifest


@dataclass(frozen=True)
class Verification:
    """What ``verify_dataset`` found. problems: each a reason the dataset is not what its manifest says (empty:
    OK); notes: what was not checked or is worth knowing but is no fault (e.g. an older manifest's missing
    card checksum)."""

    problems: list[str]
    notes: list[str]


def verify(dataset_dir: str | Path, progress: bool = False) -> list[str]:
    """The problems ``verify_dataset`` finds (empty list = OK)."""
    return verify_dataset(dataset_dir, progress).problems


def verify_dataset(dataset_dir: str | Path, progress: bool = False) -> Verification:
    """Check a dataset directory against its manifest, and the manifest against itself.

    The manifest: readable, ours, well-formed, every shard name a plain name of this dataset inside the
    directory (checked before any file is opened); class counts sum to ``total`` and so do shard counts;
    ``counts`` names exactly the ``class_names``; shard i is named ``<name>-i`` and holds the sample count its
    index implies (from ``shard_size`` when recorded). The files: every listed shard present, sha256 and sample
    count equal; no unlisted shard; every sample has its members, a decodable image at the manifest resolution
    and a label in range; labels per class equal ``counts``; where the provenance records them, each sample's
    ``sample_id`` equals its position and its ``class``/``label`` agree with ``class_names``; the dataset card
    hashes to ``card_sha256`` (a note instead for a manifest written before the card was covered).
    """
    dataset_dir = Path(dataset_dir)
    try:
        manifest = read_manifest(dataset_dir)
    except HydraMixError as exc:
        return Verification([str(exc)], [])
    problems = _manifest_problems(manifest)
    notes: list[str] = []
    class_names, res, entries = manifest["class_names"], manifest["resolution"], manifest["shards"]
    card = dataset_dir / CARD
    if "card_sha256" not in manifest:
        notes.append(
            f"the manifest has no card_sha256 (written by an older hydramix), so {CARD} is not checked; re-run "
            "`hydramix synthesize` with the same arguments to add it"
        )
    elif not card.is_file():
        problems.append(f"{CARD}: missing")
    elif not inside(dataset_dir, CARD):
        problems.append(f"{CARD}: a link to a file outside {dataset_dir}; not read")
    elif file_digest(card) != manifest["card_sha256"]:
        problems.append(f"{CARD}: sha256 differs from the manifest's card_sha256 (card edited or corrupt)")
    if (dataset_dir / PLAN).is_file():
        notes.append(f"{PLAN} present: a synthesize run into {dataset_dir} is in progress or was interrupted")
    listed = {s["name"] for s in entries}
    for path in sorted(dataset_dir.iterdir()):
        if SHARD_RE.fullmatch(path.name) and path.name not in listed:
            problems.append(f"{path.name}: shard not listed in the manifest (not part of this dataset)")
    counts = np.zeros(len(class_names), dtype=np.int64)
    complete = True  # every sample of every shard read, with a label in range
    position = 0  # sample id of the next sample, in manifest order
    # Counted in samples, not shards: a few large shards would leave the ETA blank for minutes.
    bar = tqdm(total=manifest["total"], desc="verify", unit="img", disable=not progress)
    for entry in entries:
        name, path = entry["name"], dataset_dir / entry["name"]
        if not path.is_file():
            problems.append(f"{name}: missing")
            complete = False
            position += entry["count"]
            continue
        found = _SampleProblems(name)
        n, readable = 0, True
        try:
            if file_digest(path) != entry["sha256"]:
                problems.append(f"{name}: sha256 differs from the manifest (file changed or corrupt)")
            for sample in iter_shard(path):
                bar.update()
                if sample.image.shape != (res, res, 3):
                    found.add("size", f"sample {sample.key} is {sample.image.shape}, expected {res}px")
                if not 0 <= sample.label < len(class_names):
                    found.add("range", f"sample {sample.key} label {sample.label} out of range")
                    complete = False
                else:
                    counts[sample.label] += 1
                    found.provenance(sample, position + n, class_names)
                n += 1
        except (ValueError, OSError) as exc:
            problems.append(str(exc) if isinstance(exc, ValueError) else f"{name}: unreadable ({exc})")
            complete = readable = False
        problems += found.messages()
        if readable and n != entry["count"]:
            problems.append(f"{name}: {n} samples, manifest says {entry['count']}")
        position += n if readable else entry["count"]
    bar.close()
    labelled = dict(zip(class_names, map(int, counts), strict=True))
    if complete and labelled != manifest["counts"]:
        problems.append(f"labels in the shards count {labelled} per class, manifest says {manifest['counts']}")
    return Verification(problems, notes)


def _manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Ways a well-formed manifest contradicts itself (checked without opening a shard)."""
    problems = []
    class_names, counts, entries, total = (manifest[k] for k in ("class_names", "counts", "shards", "total"))
    if len(set(class_names)) != len(class_names):
        problems.append(f"class_names {class_names} has duplicates")
    if set(counts) != set(class_names):
        problems.append(f"counts names the classes {sorted(counts)}, class_names {class_names}")
    if sum(counts.values()) != total:
        problems.append(f"class counts sum to {sum(counts.values())}, total says {total}")
    if sum(e["count"] for e in entries) != total:
        problems.append(f"shard counts sum to {sum(e['count'] for e in entries)}, total says {total}")
    prefix = prefix_of(manifest) or (SHARD_RE.fullmatch(entries[0]["name"])["name"] if entries else "")
    for i, entry in enumerate(entries):
        if entry["name"] != shard_name(prefix, i):
            problems.append(
                f"shards[{i}] is {entry['name']}, expected {shard_name(prefix, i)} (shard list reordered or edited)"
            )
    size = manifest.get("shard_size")
    if type(size) is int and size >= 1:
        if len(entries) != n_shards(total, size):
            problems.append(
                f"{len(entries)} shards listed; {total} samples in shards of {size} make {n_shards(total, size)}"
            )
        for i, entry in enumerate(entries):
            expected = len(shard_sample_ids(i, size, total))
            if entry["count"] != expected:
                problems.append(
                    f"{entry['name']}: count {entry['count']}, but shard {i} of shards of {size} holds {expected}"
                )
    return problems


class _SampleProblems:
    """Per-sample problems of one shard, reported once per kind (the first, and how many more) so that a
    systematic fault makes one line, not thousands."""

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.found: dict[str, tuple[str, int]] = {}

    def add(self, kind: str, message: str) -> None:
        first, n = self.found.get(kind, (message, 0))
        self.found[kind] = (first, n + 1)

    def provenance(self, sample: Sample, sample_id: int, class_names: Sequence[str]) -> None:
        """Check what the sample's provenance records (synthesize writes all three) against its place and label."""
        meta = sample.meta if isinstance(sample.meta, dict) else {}
        if "sample_id" in meta and meta["sample_id"] != sample_id:
            self.add("order", f"sample {sample.key} has sample_id {meta['sample_id']}, expected {sample_id} here")
        if "label" in meta and meta["label"] != sample.label:
            self.add("label", f"sample {sample.key} has label {sample.label}, its provenance {meta['label']}")
        if "class" in meta and meta["class"] != class_names[sample.label]:
            self.add(
                "class",
                f"sample {sample.key} is of class {meta['class']!r} by its provenance, "
                f"{class_names[sample.label]!r} by the manifest's class_names",
            )

    def messages(self) -> list[str]:
        return [
            f"{self.shard}: {first}" + (f" (and {n - 1} more)" if n > 1 else "") for first, n in self.found.values()
        ]
