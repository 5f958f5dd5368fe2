"""Finding open_clip weights without hanging offline: the first step of scoring (weights -> model -> shards ->
generality score).

``resolve_checkpoint`` turns ``score.pretrained`` (a hub tag, found in the local Hugging Face cache or downloaded
when the hub answers within a timeout, or a local checkpoint file) into a local file, and raises
``WeightsUnavailable`` quickly when neither works: the caller decides between a "skipped" result and an error, and
never scores with random weights. An unknown model name or tag is a plain HydraMixError (a typo, not a skip).
``pipeline.metric.clip_model.load_clip`` builds the model from the file.
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from pipeline.core.errors import HydraMixError

_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


class WeightsUnavailable(HydraMixError):
    """The configured CLIP weights cannot be had here (not cached, no network, no such file)."""


def check_model_name(model_name: str) -> None:
    """HydraMixError unless ``model_name`` is one of open_clip's built-in architectures."""
    import open_clip

    names = open_clip.list_models()
    if model_name not in names:
        close = difflib.get_close_matches(model_name, names, n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see open_clip.list_models()"
        raise HydraMixError(f"unknown open_clip model '{model_name}'{hint}")


def resolve_checkpoint(model_name: str, pretrained: str, connect_timeout_s: float = 5.0) -> tuple[str, dict]:
    """Find the weights file for (``model_name``, ``pretrained``) without hanging when offline.

    Returns (local file path, the tag's pretrained config or {} for a plain file). Raises HydraMixError for an
    unknown model or tag, WeightsUnavailable when the file/tag cannot be had (missing file, not cached and the
    hub unreachable within ``connect_timeout_s``, download failure).
    """
    import open_clip

    check_model_name(model_name)
    if not pretrained:
        raise WeightsUnavailable("no weights configured (score.pretrained is empty)")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path), {}
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    tag_cfg = (
        open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained.lower().replace("-", "_") in tags else {}
    )
    if not tag_cfg:
        if os.sep in pretrained or path.suffix in _CHECKPOINT_SUFFIXES:
            raise WeightsUnavailable(f"checkpoint file {path} does not exist")
        raise HydraMixError(
            f"'{pretrained}' is neither a file nor a pretrained tag of {model_name}; its tags are: {', '.join(tags)}"
        )
    cached = _cached_tag_file(tag_cfg)
    if cached:
        return cached, tag_cfg
    _probe_hub(tag_cfg, connect_timeout_s, f"{model_name}/{pretrained}")
    try:
        return open_clip.download_pretrained(tag_cfg), tag_cfg
    except Exception as exc:  # huggingface_hub/urllib raise many types; all mean "not here"
        raise WeightsUnavailable(f"downloading {model_name}/{pretrained} failed: {exc}") from None


def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The tag's weights file if a previous download left it in the local cache (no network access)."""
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        stem = filename.rsplit(".", 1)[0]
        # open_clip prefers a .safetensors twin of the .bin file; accept either.
        for name in (
            stem.replace("pytorch_model", "model") + ".safetensors",
            stem + ".safetensors",
            filename,
        ):
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if tag_cfg.get("url"):
        target = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        if target.is_file():
            return str(target)
    return None


def _probe_hub(tag_cfg: dict, timeout_s: float, what: str) -> None:
    """WeightsUnavailable unless the host serving ``tag_cfg`` takes a TCP connection within ``timeout_s``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise WeightsUnavailable(f"weights {what} are not in the local cache and HF_HUB_OFFLINE is set")
    url = constants.ENDPOINT if tag_cfg.get("hf_hub") else tag_cfg["url"]
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise WeightsUnavailable(
            f"weights {what} are not in the local cache and {host} is unreachable ({exc})"
        ) from None
