"""The ``README.md`` dataset card written beside a synthetic dataset's shards, from its manifest alone.

The card says what the dataset is, how it was made (generator and subset checksums, synthesis and mask
params), how to load it with ``webdataset`` in five lines or Hugging Face ``datasets`` in two, and which licence
terms it inherits: every image is computed from a few images of the source dataset, so it is a derived work of
them.

It opens with the YAML front matter the Hugging Face Hub and ``datasets.load_dataset(DIR)`` read (``front_matter``):
without it ``load_dataset`` guesses the format from the files, and on a one-shard dataset it loads
``manifest.json`` as a one-row JSON dataset; ``cls`` would come as a plain integer instead of a ``ClassLabel``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

# The provenance of a sample (``KEY.json``, written by ``pipeline.synthesis.engine.Synthesizer.render``) as Hugging Face
# feature dtypes, in the JSON's (sorted) key order. The per-sample seed is a uint64 (``derive_seeds``); int64 would
# overflow for half of them. tests/synthesis/test_hf_datasets.py checks that ``load_dataset`` returns every key of real
# ``synthesize`` output unchanged, so a key added there and not here fails a test.
PROVENANCE_FEATURES: dict[str, str | list[str]] = {
    "class": "string",
    "flipped": ["bool"],
    "label": "int64",
    "largest_share": "float64",
    "mask_kind": "string",
    "mode": "string",
    "n_sources": "int64",
    "sample_id": "int64",
    "seed": "uint64",
    "source_rows": ["int64"],
    "sources": ["int64"],
}

# (substring of the source dataset's name, caveat). First match wins; ciFAIR before CIFAR.
_LICENCE_CAVEATS: tuple[tuple[str, str], ...] = (
    (
        "cifair",
        "The source is ciFAIR (Barz & Denzler, 2020), CIFAR with its duplicate test images replaced. CIFAR "
        "images were collected from the web for the 80 Million Tiny Images project; they carry no licence "
        "from their authors and their copyright stays with the original owners. Use for non-commercial "
        "research and cite Krizhevsky (2009) and Barz & Denzler (2020).",
    ),
    (
        "cifar",
        "The source is CIFAR (Krizhevsky, 2009), images collected from the web for the 80 Million Tiny "
        "Images project; they carry no licence from their authors and their copyright stays with the "
        "original owners. Use for non-commercial research and cite Krizhevsky (2009).",
    ),
    (
        "stl",
        "The source is STL-10 (Coates, Lee & Ng, 2011), whose images come from ImageNet; ImageNet's terms "
        "apply (non-commercial research and educational use only; copyright stays with the image owners). "
        "Cite Coates, Lee & Ng (2011).",
    ),
)
_UNKNOWN_CAVEAT = (
    "The licence of the source images is not recorded here. Every synthetic image is a derived work of the "
    "source images it mixes, so the source dataset's licence and terms apply to this dataset as well; check "
    "them before sharing or using it."
)


def licence_caveat(subset_info: dict[str, Any]) -> str:
    """The licence caveat for a dataset synthesised from the subset described by ``subset_info``.

    subset_info: the manifest's ``subset`` entry (``dataset`` name and ``source`` description are used).
    """
    text = f"{subset_info.get('dataset', '')} {subset_info.get('source', '')}".lower()
    for needle, caveat in _LICENCE_CAVEATS:
        if needle in text:
            return caveat
    return _UNKNOWN_CAVEAT


def _feature(name: str, dtype: str | list[str]) -> dict[str, Any]:
    """One field in the YAML form of ``datasets.Features`` (a list ``[T]`` is a ``List`` of T)."""
    return {"name": name, "list": dtype[0]} if isinstance(dtype, list) else {"name": name, "dtype": dtype}


def front_matter(manifest: dict[str, Any]) -> str:
    """The card's YAML metadata block (``---`` ... ``---``), as the Hugging Face Hub and ``datasets`` read it.

    ``configs``: one ``train`` split of the shards (``*.tar``: neither ``manifest.json`` nor this card), read by
    ``datasets``' WebDataset builder. ``dataset_info.features``: ``png`` an image, ``cls`` a ``ClassLabel`` with
    the manifest's class names, ``json`` the provenance struct (``PROVENANCE_FEATURES``), and the builder's own
    ``__key__`` (the sample key) and ``__url__`` (the shard it came from). No ``splits``: ``datasets`` takes
    them only with ``num_bytes``, the size of its own Arrow cache, which is not ours to know. Written with
    ``yaml.safe_dump``, so any class name is quoted as YAML needs it.
    """
    metadata = {
        "license": "other",  # the source dataset's terms: see the card's Licence section
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "webdataset", "hydramix"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "*.tar"}]}],
        "dataset_info": {
            "features": [
                {"name": "png", "dtype": "image"},
                {
                    "name": "cls",
                    "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(manifest["class_names"])}}},
                },
                {"name": "json", "struct": [_feature(k, t) for k, t in PROVENANCE_FEATURES.items()]},
                {"name": "__key__", "dtype": "string"},
                {"name": "__url__", "dtype": "string"},
            ],
        },
    }
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def render_card(manifest: dict[str, Any]) -> str:
    """Markdown text of the dataset card for ``manifest`` (as written by the ``synthesize`` stage): the YAML
    front matter (``front_matter``), then the description."""
    shards = manifest["shards"]
    first, last = shards[0]["name"], shards[-1]["name"]
    pattern = first[: -len("000000.tar")] + "{" + first[-len("000000.tar") : -4] + ".." + last[-10:-4] + "}.tar"
    subset = manifest.get("subset", {})
    generator = manifest.get("generator")
    synthesis = manifest.get("synthesis", {})
    mode = synthesis.get("mode", "generator" if generator else "pixel")
    if mode == "generator" and generator:
        made_by = (
            f"a HydraMix generator (file sha256 `{generator['sha256']}`, trained for {generator.get('step')} "
            "steps) that encodes N same-class source images, fuses their feature maps with a mixing mask and "
            "decodes the composition"
        )
    elif mode == "blur":
        made_by = (
            "pixel-space composition of N same-class source images under a mixing mask (no generator), then a "
            f"Gaussian blur of sigma {synthesis.get('blur_sigma')} px (the blur control: its high-frequency "
            "power matches a generator set's)"
        )
    else:
        made_by = "pixel-space composition of N same-class source images under a mixing mask (no generator)"
    diagnostics = manifest.get("diagnostics")
    measured = ""
    if diagnostics:
        syn, real = diagnostics["synthetic"], diagnostics["real"]
        lss = syn.get("largest_source_share")
        measured = (
            f"\n\nMeasured on its first {diagnostics['prefix_per_class']} images per class (docs/diagnostics.md): "
            f"high-frequency power share {syn['hf_share']:.3f} (real subset {real['hf_share']:.3f}), "
            f"within-class diversity {syn['diversity']:.3f} (real {real['diversity']:.3f})"
            + (f", mean largest-source area share {lss:.3f}" if lss is not None else "")
            + "."
        )
    counts = ", ".join(f"{name}: {n}" for name, n in manifest["counts"].items())
    versions = ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("versions", {}).items()))
    params = json.dumps(
        {
            "synthesis": synthesis,
            "masks": manifest.get("masks", {}),
            "shard_size": manifest.get("shard_size"),
        },
        indent=2,
        sort_keys=True,
    )
    return f"""{front_matter(manifest)}
# Synthetic dataset `{manifest.get("name", first.rsplit("-", 1)[0])}`

{manifest["total"]} synthetic {manifest["resolution"]}x{manifest["resolution"]} RGB images in \
{len(manifest["class_names"])} classes ({counts}), written by `hydramix synthesize` ({mode} mode) as \
{len(shards)} WebDataset shards `{pattern}`.

## How it was made

Each image was made by {made_by}. Sources come from the labelled subset `{subset.get("dataset", "?")}` \
(k = {subset.get("k", "?")} per class, subset seed {subset.get("seed", "?")}, subset manifest sha256 \
`{subset.get("manifest_sha256", "?")}`). Sample `s` has class `s % {len(manifest["class_names"])}` and is \
determined by the seed and `s` alone, so the same generator, subset, params and seed reproduce every \
shard byte for byte (see `manifest.json` for the sha256 of each shard; `hydramix verify DIR` checks them).\
{measured}

Per sample: `KEY.png` (lossless image), `KEY.cls` (class id as text), `KEY.json` (provenance: class, the \
subset indices of the N sources, N, mask kind, per-sample seed).

Parameters:

```json
{params}
```

Libraries: {versions}.

## Loading

```python
import glob, webdataset as wds
urls = sorted(glob.glob("DIR/*.tar"))  # DIR = this directory
ds = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "cls", "json")
for image, label, provenance in ds:
    ...  # PIL image, int label, dict
```

With Hugging Face `datasets` (it reads the metadata at the top of this card: the shards, `cls` as a \
`ClassLabel`, the provenance as a struct):

```python
from datasets import load_dataset
ds = load_dataset("DIR", split="train")  # DIR = this directory, or the Hub repository it was uploaded to
row = ds[0]  # row["png"]: PIL image, row["cls"]: class id (ds.features["cls"].names), row["json"]: provenance
```

Class ids index this list: {json.dumps(manifest["class_names"])}. Within the project: \
`pipeline.synthesis.shards.load_images(DIR)` or `pipeline.synthesis.shards.iter_samples(DIR)`.

## Licence

{licence_caveat(subset)}
"""
