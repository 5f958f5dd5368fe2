"""shards -> generality score: CLIP Synset Entropy's mathematics, its vocabulary of synsets and prompts, and the
open_clip scorer that streams images through a frozen CLIP model."""
