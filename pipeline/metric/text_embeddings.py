"""The text side of scoring: template-averaged prompt embeddings of synset and class names, cached on disk.

Computed once per (model identity, names, templates) and stored as safetensors, so repeated scoring runs skip the
text tower; they are the (S, D) and (C, D) unit vectors ``pipeline.metric.scoring_loop.score_source`` compares
image embeddings against (weights -> model -> **text** + shards -> generality score).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from pipeline.core.devices import autocast
from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.metric.clip_model import LoadedClip
from pipeline.metric.synsets import prompts, templates_digest

_CACHE_FORMAT = "hydramix-clip-text/1"


def text_embeddings(
    clip: LoadedClip,
    names: tuple[str, ...] | list[str],
    template_set: tuple[str, ...],
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """(len(names), D) float32 unit vectors on ``clip.device``: per name, the normalised mean of its
    normalised template-prompt embeddings. Cached in ``cache_dir`` keyed by model identity, names and
    templates."""
    if not names:
        raise HydraMixError("no names to embed")
    path = None
    if cache_dir is not None:
        key = json.dumps([_CACHE_FORMAT, clip.identity, list(names), templates_digest(template_set)])
        path = Path(cache_dir) / f"text-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
        cached = _load_cached(path, len(names))
        if cached is not None:
            return cached.to(clip.device)
    texts = [p for name in names for p in prompts(name, template_set)]
    chunks = []
    with torch.inference_mode(), autocast(clip.device, clip.dtype):
        for start in tqdm(range(0, len(texts), batch_size), desc="text", unit="batch", disable=not progress):
            tokens = clip.tokenizer(texts[start : start + batch_size]).to(clip.device)
            chunks.append(torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1))
        per_prompt = torch.cat(chunks).reshape(len(names), len(template_set), -1)  # (S, T, D)
        embeddings = torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)
    if path is not None:
        _save_cached(path, embeddings.cpu())
    return embeddings


def _load_cached(path: Path, rows: int) -> torch.Tensor | None:
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensor = load_file(path)["embeddings"]
    except (SafetensorError, OSError, KeyError):
        return None  # a damaged cache entry is recomputed, not trusted
    return tensor if tensor.ndim == 2 and tensor.shape[0] == rows else None


def _save_cached(path: Path, tensor: torch.Tensor) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        save_file({"embeddings": tensor.contiguous()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
