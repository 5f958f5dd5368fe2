"""subset (+ shards) -> classifier -> evaluation -> report: architectures, batch augmentations, the training loop,
test-split evaluation and the paired-statistics results table; ``make_classifier``, ``evaluate_checkpoint`` and
``report.make_report`` are the whole of ``hydramix train-classifier``, ``evaluate`` and ``report``."""
