"""The classifier's weights are pinned: an uninterrupted run gives exactly the weights it gave before checkpoints
and resumption existed (results already computed depend on it)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from conftest import make_imageset

from pipeline.train_classifier import ClassifierConfig, train_classifier

BASE = ClassifierConfig(
    arch="wrn-10-1", iterations=20, batch_size=8, warmup_iterations=2, device="cpu", precision="fp32"
)
# sha256 over (name, bytes) of every state_dict entry after 20 steps on CPU with one thread, recorded with the
# code of commit b9040d8 (before the classifier could resume): (method, augment, config, sha256).
PINNED = [
    ("baseline", None, BASE, "56f50a98b736b353670d6293e2c6f954b28ab44f7c65e6c0e150ab93946cd366"),
    ("mixup", None, BASE, "895cc0d83ba68102fe08f131ff292bd7a78cf432cde8bd21277d4178b136721e"),
    ("hydramix", "mixup", BASE, "5570b684ee3b2da1493423d701a09fbe54606fd2171147002b3dbedc60061183"),
    (
        "cutout",
        None,
        dataclasses.replace(BASE, dropout=0.2, seed=5),
        "2360b18a8c43be0d7c10a682d849bf2be9ff1e836f10f51635cd32e5e6443de9",
    ),
]


def state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def real():
    return make_imageset(6, resolution=16, n_classes=3)


@pytest.fixture(scope="module")
def synthetic():
    return make_imageset(10, resolution=16, n_classes=3, seed=7)


@pytest.mark.parametrize(("method", "augment", "config", "sha256"), PINNED, ids=[p[0] for p in PINNED])
def test_uninterrupted_run_reproduces_the_pinned_weights(method, augment, config, sha256, real, synthetic):
    syn = synthetic if method == "hydramix" else None
    result = train_classifier(method, real, config, synthetic=syn, augment=augment, progress=False)
    assert state_sha256(result.model) == sha256
