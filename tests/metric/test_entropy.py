"""CLIP Synset Entropy mathematics: known distributions give known entropies, MI and consistency.

The end-to-end case uses a stand-in CLIP whose embeddings we choose: image k (a flat grey of level k) embeds
to the basis vector e_k (k < 4) or to the uniform direction (k = 4); synset "s<j>" and class "c<j>" embed to
e_j.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.metric.clip_model import clip_from_model
from pipeline.metric.entropy import SynsetAccumulator, class_metrics, entropy, synset_probabilities
from pipeline.metric.image_batches import ScoreSource, batches_from_arrays
from pipeline.metric.scoring_loop import score_source
from pipeline.metric.synsets import Vocabulary
from pipeline.metric.text_embeddings import text_embeddings

S = 4
SCALE = 10.0  # small enough that the peaked distribution is not one-hot: a non-trivial exact entropy


def peaked(j: int) -> torch.Tensor:
    """softmax(SCALE * e_j . e_s) over the S synsets."""
    return torch.softmax(SCALE * torch.eye(S)[j], dim=0)


H_PEAK = float(entropy(peaked(0)))
LOG_S = math.log(S)


def test_entropy_known_values():
    assert float(entropy(torch.full((S,), 1 / S))) == pytest.approx(LOG_S)
    assert float(entropy(torch.tensor([1.0, 0.0, 0.0]))) == 0.0  # 0 log 0 = 0, no NaN
    assert float(entropy(torch.tensor([0.5, 0.5]))) == pytest.approx(math.log(2))
    p = np.array([0.7, 0.2, 0.1])
    assert float(entropy(torch.tensor(p))) == pytest.approx(-(p * np.log(p)).sum())


def test_synset_probabilities_scaled_cosine_softmax():
    text = torch.eye(S) * 3.0  # unnormalised on purpose: cosine, not dot product
    images = torch.stack([torch.eye(S)[2] * 0.5, torch.ones(S)])
    p = synset_probabilities(images, text, SCALE)
    assert torch.allclose(p[0], peaked(2), atol=1e-6)
    assert torch.allclose(p[1], torch.full((S,), 1 / S), atol=1e-6)


def test_class_metrics_known_answers():
    uniform = torch.full((S,), 1 / S)
    probs = torch.stack([peaked(0)] * 3 + [peaked(j) for j in range(S)] + [uniform] * 2)
    labels = torch.tensor([0] * 3 + [1] * S + [2] * 2)
    predicted = torch.tensor([0, 0, 1] + [1, 0, 0, 0] + [2, 2])
    m = class_metrics(probs, labels, n_classes=4, class_predictions=predicted)
    # class 0: images agree -> no diversity; class 1: one concept each -> full coverage; class 2: ambiguous
    np.testing.assert_allclose(m.h_class[:3], [H_PEAK, LOG_S, LOG_S], atol=1e-6)
    np.testing.assert_allclose(m.h_image[:3], [H_PEAK, H_PEAK, LOG_S], atol=1e-6)
    np.testing.assert_allclose(m.mi[:3], [0.0, LOG_S - H_PEAK, 0.0], atol=1e-6)
    np.testing.assert_allclose(m.consistency[:3], [2 / 3, 1 / 4, 1.0])
    assert m.count.tolist() == [3, 4, 2, 0]
    assert np.isnan(m.h_class[3]) and np.isnan(m.consistency[3])  # a class without images is not a zero

    s = m.summary()
    assert s["n_classes_scored"] == 3 and s["n_images"] == 9 and s["n_synsets"] == S
    assert s["h_class"] == pytest.approx((H_PEAK + 2 * LOG_S) / 3)
    assert s["mi"] == pytest.approx((LOG_S - H_PEAK) / 3)
    assert s["exp_mi"] == pytest.approx(math.exp(s["mi"]))
    assert s["h_class_norm"] == pytest.approx(s["h_class"] / LOG_S)
    assert s["consistency"] == pytest.approx((2 / 3 + 1 / 4 + 1) / 3)
    per_class = m.per_class(("a", "b", "c", "d"))
    assert per_class["d"] == {"count": 0, "h_class": None, "h_image": None, "mi": None, "consistency": None}


def test_streaming_equals_one_shot_and_mi_is_non_negative():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(50, 7, generator=gen) * 3, dim=-1)
    labels = torch.randint(0, 3, (50,), generator=gen)
    whole = class_metrics(probs, labels, 3)
    acc = SynsetAccumulator(3, 7)
    for start in range(0, 50, 8):
        acc.update(probs[start : start + 8], labels[start : start + 8])
    streamed = acc.result()
    for field in ("h_class", "h_image", "mi"):
        np.testing.assert_allclose(getattr(streamed, field), getattr(whole, field), rtol=1e-12)
    assert (whole.mi >= 0).all() and (whole.h_class <= math.log(7) + 1e-9).all()
    assert whole.summary()["consistency"] is None  # no class predictions given: consistency is unknown, not 0


def test_summary_and_accumulator_reject_nonsense():
    acc = SynsetAccumulator(2, S)
    with pytest.raises(ValueError, match="no class has any image"):
        acc.result().summary()
    with pytest.raises(ValueError, match="expected probs"):
        acc.update(torch.rand(3, S + 1), torch.zeros(3, dtype=torch.long))


class StandInClip(torch.nn.Module):
    """encode_image: flat grey level k -> e_k (k < 4) or the uniform direction (k = 4); encode_text: token id
    j -> e_j. The tokenizer below maps a prompt to the j of the 's<j>' / 'c<j>' it mentions."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(SCALE)))
        self.directions = torch.cat([torch.eye(S), torch.ones(1, S)])  # (5, S)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        level = torch.round(pixels.mean(dim=(1, 2, 3)) * 255 / 50).long()  # mean=0, std=1: raw [0, 1] pixels
        return self.directions[level]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.eye(S)[tokens[:, 0]]


def stand_in_tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[int(t.split()[-1].rstrip(".")[1:])] for t in texts])


def grey_images(levels: list[int], size: int = 8) -> np.ndarray:
    return np.stack([np.full((size, size, 3), 50 * k, np.uint8) for k in levels])


def test_score_source_with_stand_in_encoder_gives_known_answers(tmp_path):
    clip = clip_from_model(
        StandInClip(),
        stand_in_tokenizer,
        identity="stand-in",
        image_size=(16, 16),  # exercises the resize: a flat image stays flat
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        resize_mode="shortest",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    ids = ("n00000000", "n00000001", "n00000002", "n00000003")
    vocab = Vocabulary(ids=ids, names=("s0", "s1", "s2", "s3"), source="test")
    template_set = ("a photo of a {}.",)
    synsets = text_embeddings(clip, vocab.names, template_set)
    classes = text_embeddings(clip, ("c0", "c1", "c2"), template_set)
    levels = [0, 0, 0, 0] + [0, 1, 2, 3] + [4, 4]
    labels = np.array([0] * 4 + [1] * 4 + [2] * 2)
    keys = [f"k{i}" for i in range(len(levels))]
    source = ScoreSource("toy", ("c0", "c1", "c2"), batches_from_arrays(keys, grey_images(levels), labels, 3))
    m = score_source(clip, source, vocab, synsets, classes, top_k=2, progress=False)
    np.testing.assert_allclose(m.h_class, [H_PEAK, LOG_S, LOG_S], atol=1e-5)
    np.testing.assert_allclose(m.h_image, [H_PEAK, H_PEAK, LOG_S], atol=1e-5)
    np.testing.assert_allclose(m.mi, [0.0, LOG_S - H_PEAK, 0.0], atol=1e-5)
    # e_3 and the uniform image tie on every class prompt -> argmax picks class 0
    np.testing.assert_allclose(m.consistency, [1.0, 1 / 4, 0.0])
