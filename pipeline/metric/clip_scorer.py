"""open_clip plumbing for the CLIP Synset Entropy metric: load weights, embed text once, score image streams.

``load_clip`` resolves ``pretrained`` (a hub tag, found in the local Hugging Face cache or downloaded when
the hub answers, or a local checkpoint file) and raises ``WeightsUnavailable`` quickly when neither
works: the caller decides between a "skipped" result and an error, and never scores with random weights.
``text_embeddings`` caches template-averaged prompt embeddings on disk. ``score_source`` streams batches of
uint8 images through preprocessing (on the device, as batch tensor ops), the image tower (inference mode,
autocast) and the metric accumulator, handing per-sample rows to a ``SampleTableWriter``; memory is flat in
dataset size.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import pickle
import queue
import socket
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.core.devices import autocast, resolve_device, resolve_dtype
from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.core.torch_io import load_error
from pipeline.metric.entropy import ClassMetrics, SynsetAccumulator, synset_probabilities
from pipeline.metric.synsets import Vocabulary, prompts, templates_digest

_CACHE_FORMAT = "hydramix-clip-text/1"
_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")
# A trained CLIP's temperature is clamped to 100 in training; a larger value would be a broken checkpoint.
_MAX_LOGIT_SCALE = 100.0


class WeightsUnavailable(HydraMixError):
    """The configured CLIP weights cannot be had here (not cached, no network, no such file)."""


@dataclass(frozen=True, eq=False)
class LoadedClip:
    """A frozen open_clip model ready to score.

    image_size: (h, w) the image tower expects; mean/std: per-channel normalisation of [0, 1] pixels;
    resize_mode: 'shortest' (resize shorter side, centre crop) or 'squash'; identity: what the weights
    are (the text-cache key); dtype: the autocast dtype (float32 = none);
    logit_scale: the model's learned temperature.
    """

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str
    identity: str
    device: torch.device
    dtype: torch.dtype
    logit_scale: float


def score_dtype(device: torch.device, precision: str) -> torch.dtype:
    """'auto' is fp16 autocast on CUDA and fp32 on CPU (bf16's 8-bit mantissa visibly moves logits scaled by
    100, so it is opt-in on CPU); the other values are ``pipeline.core.devices.resolve_dtype``'s."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(device, precision)  # type: ignore[arg-type]


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


def load_clip(
    model_name: str,
    pretrained: str,
    device: str = "auto",
    precision: str = "auto",
    connect_timeout_s: float = 5.0,
) -> LoadedClip:
    """Load a frozen, pretrained open_clip model; WeightsUnavailable if the weights cannot be had."""
    import open_clip

    checkpoint, tag_cfg = resolve_checkpoint(model_name, pretrained, connect_timeout_s)
    torch_device = resolve_device(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warnings: the error below says it all
            model = open_clip.create_model(
                model_name,
                pretrained=checkpoint,
                pretrained_text=False,  # never fetch a separate text tower: the checkpoint holds both
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            )
    except pickle.UnpicklingError as exc:  # open_clip loads with weights_only=True; never pass torch's advice on
        raise load_error(checkpoint, "CLIP checkpoint", exc) from None
    except Exception as exc:  # a file that exists but does not load is the user's to fix, not a skip
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise HydraMixError(f"cannot load {checkpoint} into open_clip model {model_name}: {first}") from None
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:
        raise WeightsUnavailable(f"the tokenizer of {model_name} cannot be loaded: {exc}") from None
    cfg = {
        **model.visual.preprocess_cfg,
        **{k: tag_cfg[k] for k in ("mean", "std", "resize_mode") if k in tag_cfg},
    }
    identity = f"{model_name}|tag:{pretrained}" if tag_cfg else _file_identity(model_name, checkpoint)
    return clip_from_model(
        model,
        tokenizer,
        identity=identity,
        image_size=_pair(cfg["size"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        resize_mode=cfg.get("resize_mode", "shortest"),
        device=torch_device,
        dtype=score_dtype(torch_device, precision),
    )


def clip_from_model(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    *,
    identity: str,
    image_size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    resize_mode: str,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedClip:
    """Freeze ``model`` (an open_clip CLIP) on ``device`` and bundle it with what scoring needs."""
    if resize_mode not in ("shortest", "squash"):
        raise HydraMixError(f"resize_mode '{resize_mode}' is not supported (use shortest or squash)")
    model = model.to(device).eval().requires_grad_(False)
    scale = min(float(model.logit_scale.exp()), _MAX_LOGIT_SCALE)
    return LoadedClip(
        model, tokenizer, image_size, tuple(mean), tuple(std), resize_mode, identity, device, dtype, scale
    )  # type: ignore[arg-type]


def _pair(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _file_identity(model_name: str, path: str) -> str:
    st = os.stat(path)  # path + size + mtime: cheap, and changes whenever the file is replaced
    return f"{model_name}|file:{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"


# ------------------------------------------------------------------------------------------------------------
# Text side


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


# ------------------------------------------------------------------------------------------------------------
# Image side


def preprocess(clip: LoadedClip, images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 on the device -> (B, 3, h, w) float32 normalised pixels for the image tower.

    Same steps as open_clip's eval transform (bicubic resize of the shorter side, centre crop, normalise),
    done as batch tensor ops; bicubic here is torch's, which differs from PIL's by rounding-level amounts.
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    h, w = x.shape[-2:]
    th, tw = clip.image_size
    if clip.resize_mode == "squash":
        size = (th, tw)
    else:
        scale = max(th / h, tw / w)
        size = (max(th, round(h * scale)), max(tw, round(w * scale)))
    if (h, w) != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (size[0] - th) // 2, (size[1] - tw) // 2
    x = x[..., top : top + th, left : left + tw].clamp_(0.0, 1.0)  # bicubic overshoots; PIL clamps to uint8
    mean = torch.tensor(clip.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def encode_images(clip: LoadedClip, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) preprocessed pixels -> (B, D) float32 unit image embeddings (inference mode, autocast)."""
    with torch.inference_mode(), autocast(clip.device, clip.dtype):
        features = clip.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1)


@dataclass(frozen=True, eq=False)
class ImageBatch:
    """keys: B sample keys; images: (B, H, W, 3) uint8; labels: (B,) int64 class ids."""

    keys: list[str]
    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True, eq=False)
class ScoreSource:
    """One dataset to score: a name for reports, its class names (prompts and ids), a stream of batches and,
    where known, its size (for the progress bar)."""

    name: str
    class_names: tuple[str, ...]
    batches: Iterable[ImageBatch]
    total: int | None = None


def batches_from_arrays(
    keys: list[str], images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[ImageBatch]:
    """Slice in-memory arrays (images (N, H, W, 3) uint8, labels (N,)) into batches."""
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        yield ImageBatch(keys[start:stop], images[start:stop], np.asarray(labels[start:stop], dtype=np.int64))


def batches_from_samples(samples: Iterable[Any], batch_size: int) -> Iterator[ImageBatch]:
    """Group a stream of samples (anything with .key, .image (H, W, 3) uint8, .label) into batches.

    Holds at most one batch; a change of image size closes the current batch early (tensors must stack).
    """
    keys: list[str] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    for sample in samples:
        if images and sample.image.shape != images[0].shape:
            yield ImageBatch(keys, np.stack(images), np.asarray(labels, dtype=np.int64))
            keys, images, labels = [], [], []
        keys.append(sample.key)
        images.append(sample.image)
        labels.append(int(sample.label))
        if len(images) == batch_size:
            yield ImageBatch(keys, np.stack(images), np.asarray(labels, dtype=np.int64))
            keys, images, labels = [], [], []
    if images:
        yield ImageBatch(keys, np.stack(images), np.asarray(labels, dtype=np.int64))


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, ``depth`` ahead: decoding (PNG, tar) overlaps model compute.

    Exceptions from the producer are re-raised in the consumer; abandoning the iterator stops the producer.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(("end", done))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put(("error", exc))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


SAMPLE_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("key", pa.string()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("top_synset_ids", pa.list_(pa.string())),
        ("top_synset_names", pa.list_(pa.string())),
        ("top_probs", pa.list_(pa.float32())),
        ("entropy", pa.float32()),
        ("zero_shot_class", pa.string()),
    ]
)


class SampleTableWriter:
    """Streams per-sample rows into a Parquet file (SAMPLE_SCHEMA) under a temporary name; ``close()`` renames
    it into place, ``abort()`` (or leaving a ``with`` block by an exception) removes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, SAMPLE_SCHEMA, compression="zstd")

    def write(self, columns: dict[str, list[Any]]) -> None:
        self._writer.write_table(pa.table(columns, schema=SAMPLE_SCHEMA))

    def close(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> SampleTableWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.abort() if exc_type else self.close()


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
