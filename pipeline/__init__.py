"""hydramix library: data sources, masks, networks, losses, training loops, shard I/O and the generality metric.

Nothing in this package reads ``params.yaml``, builds repository paths or imports Typer; the stages in
``stages/`` do that and pass typed config objects down.
"""

__version__ = "0.1.0"
