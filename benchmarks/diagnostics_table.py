"""Markdown table of the set diagnostics (docs/diagnostics.md) of synthetic sets, next to their real subset's.

    python benchmarks/diagnostics_table.py docs/results/cpu-quick-k10-5seeds/sets/*-s0.json

Each argument is a `hydramix synthesize --metrics` JSON (it carries the manifest's diagnostics). Prints one row per
set and one row for the real subset (taken from the first file; every set of one seed shares it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    rows, real = [], None
    for path in paths:
        figures = json.loads(Path(path).read_text())
        diag = figures["diagnostics"]
        real = real or diag["real"]
        syn = diag["synthetic"]
        name = Path(path).stem
        rows.append((name, syn))
    print("| set | high-frequency share | within-class diversity | largest-source share | images measured |")
    print("|---|---:|---:|---:|---:|")
    for name, d in [("real subset", real), *rows]:
        lss = "—" if d["largest_source_share"] is None else f"{d['largest_source_share']:.3f}"
        print(f"| {name} | {d['hf_share']:.4f} | {d['diversity']:.4f} | {lss} | {d['n_images']} |")


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        sys.exit(0)
    if not sys.argv[1:]:
        sys.exit(__doc__)
    missing = [a for a in sys.argv[1:] if not Path(a).is_file()]
    if missing:
        sys.exit(f"error: no such metrics JSON: {missing[0]}")
    main(sys.argv[1:])
