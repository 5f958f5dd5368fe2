"""Claiming a dataset directory, and the plan a resumed run proves its shards against.

Where it sits: subset + generator -> **shards** -> score / classifier. Before the first shard, ``plan_dataset``
claims the directory for one dataset identity (a different dataset there is refused unless forced) and writes
``plan.json``; each shard, once renamed into place, is recorded in it with its sha256 (``record_shard``); a
resumed run keeps a shard only if its file still hashes to that record (``plan_records``). ``dataset_writer``
removes the plan once the manifest is written, so a plan without a manifest is an interrupted run.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.format import CARD, FORMAT, MANIFEST, PLAN, RESULT_KEYS, SHARD_RE
from pipeline.synthesis.shards.reader import checked_shards, prefix_of
from pipeline.synthesis.shards.writer import write_json_atomic


def plan_dataset(directory: str | Path, identity: dict[str, Any], force: bool) -> None:
    """Claim ``directory`` for the dataset described by ``identity`` (JSON: inputs, params, versions).

    Writes ``plan.json``: the identity and the shards recorded so far (by the plan of an interrupted run and by
    an existing manifest; ``write_dataset_shards`` keeps one only if its file still hashes to the record). A
    manifest or plan listing anything but a plain shard name of this dataset inside ``directory`` is refused
    (HydraMixError naming the entry; nothing is deleted) unless ``force``. A directory holding a different
    dataset (manifest or plan with another identity) or shards of unknown origin is refused unless ``force``,
    which deletes the shards, temporaries, manifest, card and plan found in ``directory`` (nothing else, and
    never a file because a manifest names it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as they will read back from the file
    previous: list[Any] = []  # the identity each existing manifest or plan records (None: unreadable)
    records: list[dict[str, Any]] = []
    for fname in (MANIFEST, PLAN):
        path = directory / fname
        if not path.is_file():
            continue
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict):
            previous.append(None)
            continue
        try:
            # names of the dataset that recorded them: another --name is a different identity, refused below
            records += checked_shards(directory, recorded.get("shards", []), path, prefix_of(recorded))
        except HydraMixError as exc:
            if not force:
                raise HydraMixError(
                    f"{exc}; nothing was deleted. Pass --force to rebuild the dataset (deletes only its shards, "
                    "manifest, card and plan) or choose another --out"
                ) from None
            previous.append(None)
            continue
        previous.append(_identity_of(recorded))
    ours = _our_files(directory)
    differing = [p for p in previous if p != identity]
    if differing or not previous and ours:
        other = differing[0] if differing else None
        if not force:
            what = _describe_difference(other, identity) if isinstance(other, dict) else "of unknown origin"
            raise HydraMixError(
                f"{directory} already holds a different synthetic dataset ({what}); "
                "pass --force to replace it or choose another --out"
            )
        for path in ours:
            path.unlink()
        records = []
    write_json_atomic(directory / PLAN, {"format": FORMAT, **identity, "shards": _agreeing(records)})


def _agreeing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records by name, sorted; a name recorded twice with different contents is dropped (re-rendered)."""
    by_name: dict[str, dict[str, Any]] = {}
    disputed = set()
    for entry in records:
        if by_name.setdefault(entry["name"], entry) != entry:
            disputed.add(entry["name"])
    return [by_name[name] for name in sorted(by_name) if name not in disputed]


def plan_records(directory: Path) -> dict[str, dict[str, Any]]:
    """The shards ``plan.json`` records, by name; HydraMixError if the directory was not claimed (no plan)."""
    path = directory / PLAN
    if not path.is_file():
        raise HydraMixError(f"{directory}: no {PLAN}, so the directory was not claimed; run the command again")
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HydraMixError(f"{path}: unreadable ({exc}); run the command again") from None
    if not isinstance(plan, dict):
        raise HydraMixError(f"{path}: not a plan; run the command again")
    return {e["name"]: e for e in checked_shards(directory, plan.get("shards", []), path, prefix_of(plan))}


def record_shard(directory: Path, entry: dict[str, Any]) -> None:
    """Add a shard just renamed into place to the plan: the record a resume proves it against. Processes that
    write shards of one dataset (torchrun ranks) take turns through a lock on the directory itself."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = directory / PLAN
        try:
            plan = json.loads(path.read_text())
            kept = [s for s in plan.get("shards", []) if s["name"] != entry["name"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HydraMixError(f"{path}: changed while shards were written ({exc}); run the command again") from None
        record = {k: entry[k] for k in ("name", "sha256", "count")}
        plan["shards"] = sorted([*kept, record], key=lambda s: s["name"])
        write_json_atomic(path, plan)
    finally:
        os.close(fd)  # releases the lock


def _identity_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in RESULT_KEYS}


def _our_files(directory: Path) -> list[Path]:
    """Files a dataset writer writes: shards, manifest, card, plan and their temporaries (links named so too)."""
    names = {MANIFEST, CARD, PLAN}
    return sorted(
        p
        for p in directory.iterdir()
        if (p.is_symlink() or p.is_file())
        and (p.name.removesuffix(".tmp") in names or SHARD_RE.fullmatch(p.name.removesuffix(".tmp")))
    )


def _describe_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys.append(_describe_difference(a, b, f"{prefix}{k}.").removeprefix("differs in "))
        else:
            keys.append(f"{prefix}{k}")
    return "differs in " + ", ".join(keys) if keys else "different"
