"""Shared plumbing every stage uses: strict config loading, errors, devices and precision, threads, progress,
atomic files, checksums, torch file I/O and torch.distributed. Nothing here knows about images or models."""
