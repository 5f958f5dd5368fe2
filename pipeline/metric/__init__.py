"""shards -> generality score: CLIP Synset Entropy's mathematics, its vocabulary of synsets and prompts, and the
open_clip scorer that streams images through a frozen CLIP model; ``score_dataset`` is the whole of ``hydramix
score``. The modules in flow order are listed in docs/metric.md ("Code")."""
