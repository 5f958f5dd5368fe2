"""subset -> generator: the config, the data path (batches of same-class mixes), the HydraMix networks, the
segmentation-guided masks, the losses, the training loop, the evaluation and picture grid, the generator's quality
figures, its files, and ``make_generator``: the whole of ``hydramix train-generator``."""
