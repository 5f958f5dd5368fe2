"""subset (+ shards) -> classifier -> evaluation -> report: architectures, batch augmentations, the training loop,
test-split evaluation and the paired-statistics results table."""
