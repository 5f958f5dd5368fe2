"""subset + generator -> shards: the engine that turns sample ids into mixes, the pixel and blur controls, the
WebDataset shards (``shards/``: format, write, read, verify), set diagnostics, the dataset card and the gallery page."""
