"""subset + generator -> **shards** -> score / classifier: a synthetic dataset as WebDataset tar shards.

A dataset directory holds ``<name>-NNNNNN.tar`` shards, ``manifest.json`` and a ``README.md`` dataset card
(``docs/shards.md``). The modules, in the order a dataset is written and then read:

- ``format``: file names, which sample ids shard i holds, which rank writes it; ``ShardConfig``, ``Sample``.
- ``writer``: one shard as a deterministic tar; the atomic writes of the card, manifest and plan.
- ``lock``: one process writing into a directory (``lock_directory``).
- ``plan``: claiming a directory for one dataset identity; the plan a resume proves shards against.
- ``writer_thread``: one shard rendered on the caller's thread while a thread encodes it, safe under Ctrl-C.
- ``dataset_writer``: a whole dataset: its shards (kept if proven, else rendered), then card and manifest.
- ``reader``: the manifest (every shard name checked before a file is opened), shards, samples, images.
- ``verification``: a directory against its manifest, and the manifest against itself.

The package exposes the API a user of a dataset reads and verifies it with, so that the spelling every dataset
card documents, ``pipeline.synthesis.shards.load_images(DIR)`` / ``pipeline.synthesis.shards.iter_samples(DIR)``,
works: ``Sample``, ``iter_samples``, ``iter_shard``, ``load_images``, ``read_manifest``, ``shard_paths``,
``verify``, ``verify_dataset`` and ``Verification``. The library itself imports every name from its home module.
"""

from pipeline.synthesis.shards.format import Sample
from pipeline.synthesis.shards.reader import iter_samples, iter_shard, load_images, read_manifest, shard_paths
from pipeline.synthesis.shards.verification import Verification, verify, verify_dataset

__all__ = [
    "Sample",
    "Verification",
    "iter_samples",
    "iter_shard",
    "load_images",
    "read_manifest",
    "shard_paths",
    "verify",
    "verify_dataset",
]
