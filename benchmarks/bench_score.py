"""Throughput of the CLIP Synset Entropy scorer vs the bare image-encoder forward, on one device, same run.

SPEED ONLY: the model is a RANDOMLY INITIALISED open_clip ViT-B-32 (no pretrained weights exist here) and the
1,000 synset / class text embeddings are random unit vectors (the text side is computed once and cached, so it
is not part of the per-image cost). No metric value is computed for reporting or printed.

full scorer = uint8 batch -> device -> resize/crop/normalise -> image tower -> p(s|x) over 1,000 synsets ->
per-class accumulators + top-k rows into a Parquet file, i.e. ``pipeline.metric.scoring_loop.score_source``.
bare forward = ``model.encode_image`` on already preprocessed pixels, same batch size, precision and autocast.

    python benchmarks/bench_score.py [--n 128] [--batch-size 32] [--precision fp32|bf16] [--resolution 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

from pipeline.core.devices import resolve_device
from pipeline.metric.clip_model import clip_from_model, encode_images, preprocess, score_dtype
from pipeline.metric.image_batches import ScoreSource, batches_from_arrays
from pipeline.metric.sample_table import SampleTableWriter
from pipeline.metric.scoring_loop import score_source
from pipeline.metric.synsets import imagenet_vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128, help="images per timed pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--resolution", type=int, default=32, help="input image side (CIFAR: 32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each; the best is reported")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = score_dtype(device, args.precision)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained_text=False)  # random init: speed only
    clip = clip_from_model(
        model,
        open_clip.get_tokenizer("ViT-B-32"),
        identity="random-ViT-B-32-benchmark",
        image_size=(224, 224),
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
        resize_mode="shortest",
        device=device,
        dtype=dtype,
    )
    vocab = imagenet_vocabulary()
    synsets = torch.nn.functional.normalize(torch.randn(len(vocab), 512, device=device), dim=-1)
    classes = torch.nn.functional.normalize(torch.randn(10, 512, device=device), dim=-1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, args.resolution, args.resolution, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n)
    keys = [f"k{i}" for i in range(args.n)]
    pixels = [
        preprocess(clip, torch.from_numpy(images[s : s + args.batch_size]).to(device))
        for s in range(0, args.n, args.batch_size)
    ]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> float:
        sync()
        start = time.perf_counter()
        for batch in pixels:
            encode_images(clip, batch)
        sync()
        return time.perf_counter() - start

    def full(out: Path) -> float:
        source = ScoreSource(
            "bench",
            tuple(f"c{i}" for i in range(10)),
            batches_from_arrays(keys, images, labels, args.batch_size),
        )
        sync()
        start = time.perf_counter()
        with SampleTableWriter(out) as sink:
            score_source(clip, source, vocab, synsets, classes, top_k=5, sink=sink, progress=False)
        sync()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        encode_images(clip, pixels[0])  # warm-up (allocator, kernels)
        bare_s, full_s = [], []
        for r in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            bare_s.append(bare())
            full_s.append(full(Path(tmp) / f"s{r}.parquet"))
    bare_ips, full_ips = args.n / min(bare_s), args.n / min(full_s)
    passes = {name: ", ".join(f"{t:.2f}s" for t in ts) for name, ts in (("bare", bare_s), ("full", full_s))}
    precision = str(dtype).replace("torch.", "")
    print("RANDOMLY INITIALISED ViT-B-32 - speed only, no scores")
    print(f"device {device}, autocast {precision}, threads {torch.get_num_threads()}, {args.n} images")
    print(f"{args.resolution}px -> 224px, batch {args.batch_size}, best of {args.repeats} interleaved passes")
    print(f"bare image-encoder forward : {bare_ips:8.2f} img/s  (passes: {passes['bare']})")
    print(f"full scorer (score_source) : {full_ips:8.2f} img/s  (passes: {passes['full']})")
    print(f"ratio full / bare          : {full_ips / bare_ips:8.3f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
