"""subset -> generator: the HydraMix networks, the segmentation-guided masks, the losses, the training loop and
the generator's quality figures."""
