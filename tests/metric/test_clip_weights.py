"""Resolving open_clip weights: a typo is an error, missing weights are WeightsUnavailable, and offline a hub tag
fails at once (never downloads here)."""

from __future__ import annotations

import pytest

from pipeline.core.errors import HydraMixError
from pipeline.metric import clip_weights
from pipeline.metric.clip_weights import WeightsUnavailable, resolve_checkpoint


def test_resolve_checkpoint_errors_and_offline_fast_path(tmp_path, monkeypatch):
    with pytest.raises(HydraMixError, match="unknown open_clip model 'ViT-B-33'.*ViT-B-32"):
        resolve_checkpoint("ViT-B-33", "laion2b_s34b_b79k")
    with pytest.raises(HydraMixError, match="neither a file nor a pretrained tag") as info:
        resolve_checkpoint("ViT-B-32", "laion9000")
    assert not isinstance(info.value, WeightsUnavailable)  # a typo is an error, not a skip
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        resolve_checkpoint("ViT-B-32", str(tmp_path / "missing.bin"))
    with pytest.raises(WeightsUnavailable, match="empty"):
        resolve_checkpoint("ViT-B-32", "")
    # Offline: a tag that is not cached fails at once instead of retrying downloads (never downloads here).
    monkeypatch.setattr(clip_weights, "_cached_tag_file", lambda cfg: None)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE"):
        resolve_checkpoint("ViT-B-32", "laion2b_s34b_b79k")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsUnavailable, match="unreachable"):  # port 9 on localhost: refused at once
        clip_weights._probe_hub({"url": "http://127.0.0.1:9/w.pt"}, 2.0, "x")
