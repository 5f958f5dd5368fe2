"""The scoring loop: one dataset's image stream through the frozen CLIP into CLIP Synset Entropy statistics
(weights -> model -> shards -> **generality score**).

``score_source`` takes each ``ImageBatch`` of a ``ScoreSource`` to the device, preprocesses it and runs the image
tower (``pipeline.metric.clip_model``), turns the embeddings into p(synset | image) against the cached text
embeddings and feeds the per-class accumulator (``pipeline.metric.entropy``), handing per-sample rows to a
``SampleTableWriter``. Memory is flat in dataset size.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.metric.clip_model import LoadedClip, encode_images, preprocess
from pipeline.metric.entropy import ClassMetrics, SynsetAccumulator, synset_probabilities
from pipeline.metric.image_batches import ImageBatch, ScoreSource, prefetch
from pipeline.metric.sample_table import SampleTableWriter
from pipeline.metric.synsets import Vocabulary


def score_source(
    clip: LoadedClip,
    source: ScoreSource,
    vocabulary: Vocabulary,
    synset_embeddings: torch.Tensor,
    class_embeddings: torch.Tensor,
    top_k: int = 5,
    sink: SampleTableWriter | None = None,
    progress: bool = True,
) -> ClassMetrics:
    """Stream ``source`` through the model into per-class CLIP Synset Entropy statistics.

    synset_embeddings: (S, D) unit text embeddings of ``vocabulary``; class_embeddings: (C, D) of the source's
    class names (for the consistency check). Per-sample rows go to ``sink`` when given. HydraMixError for an
    empty source or a label outside its classes.
    """
    n_classes = len(source.class_names)
    if class_embeddings.shape[0] != n_classes or synset_embeddings.shape[0] != len(vocabulary):
        raise ValueError("embedding rows must match the class names and the vocabulary")
    accumulator = SynsetAccumulator(n_classes, len(vocabulary), clip.device)
    k = min(top_k, len(vocabulary))
    seen = 0
    with tqdm(total=source.total, desc=f"score {source.name}", unit="img", disable=not progress) as bar:
        for batch in prefetch(source.batches):
            if len(batch.labels) and (batch.labels.min() < 0 or batch.labels.max() >= n_classes):
                bad = int(batch.labels[(batch.labels < 0) | (batch.labels >= n_classes)][0])
                raise HydraMixError(f"dataset '{source.name}': label {bad} outside its {n_classes} classes")
            images = torch.from_numpy(np.ascontiguousarray(batch.images)).to(clip.device, non_blocking=True)
            labels = torch.from_numpy(batch.labels).to(clip.device)
            features = encode_images(clip, preprocess(clip, images))
            probs = synset_probabilities(features, synset_embeddings, clip.logit_scale)
            predicted = (features @ class_embeddings.T).argmax(dim=-1)
            h = accumulator.update(probs, labels, predicted)
            if sink is not None:
                top_p, top_i = probs.topk(k, dim=-1)
                _write_rows(sink, source, vocabulary, batch, top_p, top_i, h, predicted)
            seen += len(batch.keys)
            bar.update(len(batch.keys))
    if seen == 0:
        raise HydraMixError(f"dataset '{source.name}' has no images to score")
    return accumulator.result()


def _write_rows(
    sink: SampleTableWriter,
    source: ScoreSource,
    vocabulary: Vocabulary,
    batch: ImageBatch,
    top_p: torch.Tensor,
    top_i: torch.Tensor,
    h: torch.Tensor,
    predicted: torch.Tensor,
) -> None:
    idx = top_i.cpu().numpy()
    sink.write(
        {
            "dataset": [source.name] * len(batch.keys),
            "key": list(batch.keys),
            "label": batch.labels.tolist(),
            "class_name": [source.class_names[c] for c in batch.labels],
            "top_synset_ids": [[vocabulary.ids[j] for j in row] for row in idx],
            "top_synset_names": [[vocabulary.names[j] for j in row] for row in idx],
            "top_probs": top_p.float().cpu().numpy().tolist(),
            "entropy": h.float().cpu().numpy().tolist(),
            "zero_shot_class": [source.class_names[c] for c in predicted.cpu().numpy()],
        }
    )
