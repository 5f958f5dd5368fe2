"""hydramix library, one folder per part of the data flow (docs/architecture.md):

    data/ (raw -> subset)  ->  generator/  ->  synthesis/ (shards)  ->  metric/ (score), classify/ (-> report)

with shared plumbing in ``core/``. Nothing in this package reads ``params.yaml``, builds repository paths or
imports Typer; the stages in ``stages/`` do that and pass typed config objects down.
"""

__version__ = "0.1.0"
