"""Architecture registry: shapes, every parameter trained, unknown names rejected."""

from __future__ import annotations

import pytest
import torch

from pipeline.classify.architectures import ARCHITECTURES, WideResNet, build_classifier
from pipeline.core.errors import HydraMixError


def test_registry_names():
    assert {"wrn-16-8", "wrn-16-2", "resnet50"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ["wrn-10-1", "wrn-16-2"])
def test_wrn_forward_backward_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=3, dropout=0.3)
    logits = model(torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_wrn_16_8_widths():
    model = build_classifier("wrn-16-8", num_classes=10, dropout=0.3)
    assert model.fc.in_features == 512  # 64 * k
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 6  # one per block, 2 blocks x 3 stages


def test_resnet50_is_untrained_and_has_requested_classes():
    torch.manual_seed(0)
    model = build_classifier("resnet50", num_classes=10, dropout=0.0).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # Random init: BN running stats still at their defaults (pretrained weights would have changed them).
    assert torch.equal(model.bn1.running_mean, torch.zeros(64))


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(HydraMixError, match="unknown architecture 'wrn-99'.*wrn-16-8.*resnet50"):
        build_classifier("wrn-99", 10, 0.0)


def test_bad_depth():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=12, width=1, num_classes=2, dropout=0.0)
