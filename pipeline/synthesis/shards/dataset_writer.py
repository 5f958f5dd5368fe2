"""Writing a whole synthetic dataset: claim, shards (kept if proven, else rendered), then card and manifest.

Where it sits: subset + generator -> **shards** -> score / classifier. ``pipeline.synthesis.synthesize_dataset``
(the ``synthesize`` command) calls ``write_dataset``; under torchrun every rank calls ``write_dataset_shards`` for
its share (``format.shards_for_rank``) and rank 0 then ``write_dataset`` for the card and manifest. A shard is
rendered in chunks from its first sample id, so its bytes do not depend on which other shards are written, by
which process or in which order.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.synthesis.shards.format import (
    CARD,
    FORMAT,
    MANIFEST,
    PLAN,
    RESULT_KEYS,
    Renderer,
    ShardConfig,
    n_shards,
    shard_name,
    shard_sample_ids,
)
from pipeline.synthesis.shards.plan import plan_dataset, plan_records, record_shard
from pipeline.synthesis.shards.writer import write_atomic, write_json_atomic
from pipeline.synthesis.shards.writer_thread import write_rendered_shard


def write_dataset_shards(
    directory: str | Path,
    renderer: Renderer,
    shards: ShardConfig,
    batch_size: int,
    indices: Iterable[int] | None = None,
    progress: bool = True,
) -> dict[int, dict[str, Any]]:
    """Render and write the shards ``indices`` (default: all) of ``renderer``'s dataset into ``directory``,
    which ``plan_dataset`` has claimed.

    Shard i holds sample ids [i*S, min((i+1)*S, total)), rendered in chunks of ``batch_size`` from the
    shard's first id, so its bytes do not depend on which other shards are written, by which process or in
    which order. A shard is kept only if the plan records it and its file hashes to the recorded sha256 (a
    damaged or unrecorded file is rendered again); each shard written is recorded in the plan once it is in
    place. PNG encoding and tar writing run in a background thread while the next chunk renders. Returns
    ``{index: {"name", "sha256", "count", "rendered", "repaired"}}`` (rendered: False for a kept shard;
    repaired: rendered again because the file differed from its record). A full disk raises HydraMixError; no
    partial shard or temporary is left, also on Ctrl-C.
    """
    directory = Path(directory)
    if batch_size < 1:
        raise HydraMixError(f"batch_size must be >= 1, got {batch_size}")
    total = int(renderer.total)
    count = n_shards(total, shards.shard_size)
    todo = list(range(count)) if indices is None else sorted(set(indices))
    if any(not 0 <= i < count for i in todo):
        raise HydraMixError(f"shard indices must lie in [0, {count}), got {todo}")
    recorded = plan_records(directory)
    written: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    damaged: set[int] = set()
    for i in todo:
        path = directory / shard_name(shards.name, i)
        record = recorded.get(path.name)
        if record is not None and record["count"] == len(shard_sample_ids(i, shards.shard_size, total)):
            if path.is_file() and file_digest(path) == record["sha256"]:
                written[i] = {**record, "rendered": False, "repaired": False}
                continue
            if path.exists():
                damaged.add(i)
        pending.append(i)
    n_pending = sum(len(shard_sample_ids(i, shards.shard_size, total)) for i in pending)
    with tqdm(total=n_pending, desc="synthesize", unit="img", disable=not progress or not pending) as bar:
        for i in pending:
            ids = shard_sample_ids(i, shards.shard_size, total)
            chunks = (ids[s : s + batch_size] for s in range(0, len(ids), batch_size))
            try:
                entry = write_rendered_shard(directory / shard_name(shards.name, i), renderer, chunks, bar.update)
                record_shard(directory, entry)
                written[i] = {**entry, "rendered": True, "repaired": i in damaged}
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise HydraMixError(
                        f"{directory}: disk full while writing {shard_name(shards.name, i)}; no partial "
                        "shard was kept. Free space and run the same command again to finish the rest."
                    ) from None
                raise HydraMixError(f"{directory}: cannot write {shard_name(shards.name, i)} ({exc})") from None
    return written


def finish_dataset(
    directory: str | Path,
    entries: Sequence[dict[str, Any]],
    *,
    class_names: Sequence[str],
    resolution: int,
    counts: dict[str, int],
    identity: dict[str, Any],
    card: Callable[[dict[str, Any]], str] | str,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the dataset card and, last, ``manifest.json``; remove the plan. Returns the manifest.

    entries: ``write_shard`` results for shards 0..n-1 in order. identity: the JSON description of inputs and
    params (generator and subset checksums, synthesis and mask params, versions), stored at the manifest's top
    level. card: the README text, or a function of the manifest returning it (called before ``card_sha256``,
    the sha256 of the card's bytes, is added to the manifest). diagnostics: optional figures measured on the
    written set (a result, not part of the identity), stored under ``diagnostics``.
    """
    directory = Path(directory)
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names) or sum(e["count"] for e in entries) != sum(counts.values()):
        raise HydraMixError(f"{directory}: shard list does not add up to the class counts {counts}")
    clash = sorted(set(identity) & set(RESULT_KEYS))
    if clash:
        raise ValueError(f"identity may not use the manifest's own keys {clash}")
    manifest = {
        "format": FORMAT,
        "total": int(sum(counts.values())),
        "class_names": list(class_names),
        "resolution": int(resolution),
        "counts": {k: int(v) for k, v in counts.items()},
        "shards": [{"name": e["name"], "sha256": e["sha256"], "count": int(e["count"])} for e in entries],
        **identity,
    }
    if diagnostics is not None:
        manifest["diagnostics"] = diagnostics
    text = (card(manifest) if callable(card) else card).encode("utf-8")
    write_atomic(directory / CARD, text)
    manifest["card_sha256"] = hashlib.sha256(text).hexdigest()
    write_json_atomic(directory / MANIFEST, manifest)
    (directory / PLAN).unlink(missing_ok=True)
    return manifest


def class_counts(total: int, class_names: Sequence[str]) -> dict[str, int]:
    """Samples per class when sample s has class s % C (the Synthesizer's rule)."""
    c = len(class_names)
    return {name: len(range(label, total, c)) for label, name in enumerate(class_names)}


def write_dataset(
    directory: str | Path,
    renderer: Renderer,
    shards: ShardConfig,
    batch_size: int,
    *,
    identity: dict[str, Any],
    class_names: Sequence[str],
    resolution: int,
    card: Callable[[dict[str, Any]], str] | str,
    force: bool = False,
    indices: Iterable[int] | None = None,
    progress: bool = True,
    describe: Callable[[Path, list[str]], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """Plan, render and finish a synthetic dataset in ``directory``: the whole ``synthesize`` stage's work.

    ``renderer`` renders sample s as class s % len(class_names). With ``indices`` (this process's share, see
    ``shards_for_rank``) only those shards are written, and the manifest only once every shard of the dataset
    is present and matches its record in the plan. Returns (the manifest or None if shards are still missing,
    the per-shard results of this call). HydraMixError for a directory holding another dataset (unless
    ``force``) or a full disk. describe: optional ``(directory, shard names in order) -> diagnostics``, called
    once every shard is written, before the manifest; its result is the manifest's ``diagnostics``. Takes no
    lock: a caller that may race another writer holds ``lock.lock_directory``.
    """
    directory = Path(directory)
    try:
        plan_dataset(directory, identity, force)
        written = write_dataset_shards(directory, renderer, shards, batch_size, indices, progress)
        total = int(renderer.total)
        recorded = plan_records(directory)
        entries = []
        for i in range(n_shards(total, shards.shard_size)):
            if i in written:
                entries.append(written[i])
                continue
            path = directory / shard_name(shards.name, i)
            record = recorded.get(path.name)
            expected = len(shard_sample_ids(i, shards.shard_size, total))
            if record is None or record["count"] != expected or not path.is_file():
                return None, written  # another process's shard, not written yet
            if file_digest(path) != record["sha256"]:
                return None, written  # changed since it was written: the next run renders it again
            entries.append(record)
        manifest = finish_dataset(
            directory,
            entries,
            class_names=class_names,
            resolution=resolution,
            counts=class_counts(total, class_names),
            identity=identity,
            card=card,
            diagnostics=describe(directory, [e["name"] for e in entries]) if describe else None,
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HydraMixError(f"{directory}: disk full ({exc}); free space and run the command again") from None
        raise HydraMixError(f"{directory}: cannot write ({exc})") from None
    return manifest, written
