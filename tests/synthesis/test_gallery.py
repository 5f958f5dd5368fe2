"""``hydramix gallery``: the page's content (pure ``pipeline.synthesis.gallery``), the command end to end on a tiny
synthesized set and its one-line errors, and (slow) the page rendered by a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_MASKS, TINY_SYNTH
from PIL import Image
from typer.testing import CliRunner

from pipeline.synthesis import gallery
from pipeline.synthesis.shards.format import Sample
from pipeline.synthesis.shards.reader import iter_samples
from stages.cli import app

runner = CliRunner()
URL = re.compile(r"https?://", re.IGNORECASE)
MASKS = TINY_MASKS
SYNTH = {**TINY_SYNTH, "mode": "pixel"}
CLASSES = ("cat", "<b>dog</b> & co", "emu")


def fabricated(n_per_class: int = 4) -> tuple[dict, list[Sample]]:
    """A manifest and samples shaped like `synthesize` output (sample s of class s % 3), without writing them."""
    rng = np.random.default_rng(0)
    total = n_per_class * len(CLASSES)
    samples = []
    for s in range(total):
        label = s % len(CLASSES)
        meta = {
            "class": CLASSES[label],
            "label": label,
            "sources": [10 * label + 1, 10 * label + 2],
            "source_rows": [0, 1],
            "flipped": [False, True],
            "n_sources": 2,
            "mask_kind": "segmentation",
            "seed": 2**63 + s,  # a uint64 beyond JavaScript's exact integers
            "sample_id": s,
            "mode": "generator",
            "largest_share": 0.5,
        }
        samples.append(Sample(f"{s:09d}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), label, meta))
    manifest = {
        "name": "toy",
        "total": total,
        "resolution": 8,
        "class_names": list(CLASSES),
        "counts": {c: n_per_class for c in CLASSES},
        "shards": [{"name": "toy-000000.tar", "sha256": "0" * 64, "count": total}],
        "generator": {"sha256": "ab" * 32, "step": 3000},
        "subset": {"dataset": "tiny", "k": 10, "seed": 0},
        "synthesis": {"mode": "generator"},
        "diagnostics": {
            "prefix_per_class": 200,
            "synthetic": {"hf_share": 0.123456, "hf_share_std": 0.01, "diversity": 0.2, "largest_source_share": 0.5},
            "real": {"hf_share": 0.2, "diversity": 0.3, "largest_source_share": None},
        },
    }
    return manifest, samples


def markup(page: str) -> str:
    """The page without its scripts (which build the panel's own elements, from the page's JSON)."""
    return re.sub(r"<script\b.*?</script>", "", page, flags=re.DOTALL)


def images(page: str) -> int:
    """How many <img> elements the page's markup has."""
    return len(re.findall(r"<img\b", markup(page)))


def loads_nothing(page: str) -> bool:
    """No URL anywhere, every reference the markup has is an inlined image or a link within the page, and the
    script's images are the page JSON's data: URIs (or copies of the grid's)."""
    sources = re.findall(r'\bsrc="([^"]*)"', markup(page))
    sources += list(page_data(page)["sources"].values())
    links = re.findall(r'\bhref="([^"]*)"', markup(page))
    return (
        not URL.search(page)
        and all(s.startswith("data:image/png;base64,") for s in sources)
        and all(h.startswith("#") for h in links)
        and "url(" not in page
        and "@import" not in page
    )


def page_data(page: str) -> dict:
    """The JSON the page's script reads."""
    match = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', page, re.DOTALL)
    assert match
    return json.loads(match.group(1))


SCORES = {
    "status": "ok",
    "model": "ViT-B-32",
    "pretrained": "laion2b_s34b_b79k",
    "datasets": {
        "real_train": {"h_class": 2.5, "h_image": 1.25, "mi": 1.25, "consistency": 0.75, "n_images": 30},
        "toy": {
            "h_class": 3.25,
            "h_image": 1.5,
            "mi": 1.75,
            "consistency": 0.5,
            "n_images": 12,
            "per_class": {"cat": {"count": 4, "h_class": 9.875, "h_image": 1.0, "mi": 1.0, "consistency": 1.0}},
        },
    },
}


def test_page_has_every_class_its_images_and_no_url():
    manifest, samples = fabricated(n_per_class=4)
    picked = gallery.pick_samples(samples, len(CLASSES), per_class=3)
    sources = {i: np.full((8, 8, 3), i, np.uint8) for i in (1, 2, 11, 12, 21, 22, 99)}
    page = gallery.render_gallery(manifest, picked, card="# Card\n\nText.\n", sources=sources)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for label in range(len(CLASSES)):
        assert f'id="class-{label}"' in page
    assert "&lt;b&gt;dog&lt;/b&gt; &amp; co" in page and "<b>dog</b>" not in page  # names are escaped
    assert images(page) == 3 * len(CLASSES)  # the grid: the first 3 of every class
    assert not URL.search(page), URL.search(page)
    assert loads_nothing(page) and "<link" not in page and "<script src" not in page
    data = page_data(page)
    assert [s["meta"]["sample_id"] for s in data["samples"]] == [0, 3, 6, 1, 4, 7, 2, 5, 8]  # class by class
    assert set(data["sources"]) == {"1", "2", "11", "12", "21", "22"}  # only the sources shown, each once
    assert all(uri.startswith("data:image/png;base64,") for uri in data["sources"].values())
    assert data["samples"][0]["meta"]["seed"] == str(2**63)  # not rounded by JavaScript's doubles
    assert page == gallery.render_gallery(manifest, picked, card="# Card\n\nText.\n", sources=sources)  # same bytes


def test_page_shows_diagnostics_scores_and_the_card():
    manifest, samples = fabricated()
    picked = gallery.pick_samples(samples, len(CLASSES), per_class=2)
    card = "---\nlicense: other\n---\n\n# Synthetic dataset `toy`\n\n## Licence\n\nUse <b>with</b> care.\n"
    page = gallery.render_gallery(manifest, picked, card=card, scores=SCORES, scores_name="toy")
    assert "Set diagnostics" in page and "0.123" in page and "± 0.010" in page
    assert '<tr class="mine"><th>toy</th><td>3.250</td>' in page and "real_train" in page
    assert "9.875" in page  # this set's per-class figure beside its class
    assert "<h3>Synthetic dataset <code>toy</code></h3>" in page and "<h4>Licence</h4>" in page
    assert "Use &lt;b&gt;with&lt;/b&gt; care." in page and "license: other" in page
    skipped = {"status": "skipped", "reason": "no weights here", "model": "ViT-B-32", "pretrained": "x"}
    page = gallery.render_gallery(manifest, picked, scores=skipped)
    assert "Scoring was skipped: no weights here" in page and "<th>H<sub>class" not in page
    page = gallery.render_gallery({**manifest, "diagnostics": None}, picked)
    assert "holds no diagnostics" in page and "No scores given" in page and "No README.md" in page
    assert '"haveSources":false' in page  # the panel says to pass --subset


def test_pick_samples_stops_reading_once_every_class_is_full():
    _, samples = fabricated(n_per_class=100)
    consumed = []

    def stream():
        for sample in samples:
            consumed.append(sample.key)
            yield sample

    picked = gallery.pick_samples(stream(), len(CLASSES), per_class=5)
    assert len(consumed) == 5 * len(CLASSES)
    assert {c: [s.meta["sample_id"] for s in v] for c, v in picked.items()} == {
        c: [c + 3 * i for i in range(5)] for c in range(3)
    }
    short = gallery.pick_samples(samples[:4], 3, per_class=5)  # fewer than asked: what there is
    assert [len(v) for v in short.values()] == [2, 1, 1]
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        gallery.pick_samples(samples, 3, per_class=0)


@pytest.fixture
def dataset(tmp_path, tiny_subset) -> Path:
    """24 samples (4 classes x 6) of `synthesize --mode pixel` in 3 shards."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": SYNTH, "generator": {"masks": MASKS}}))
    out = tmp_path / "tiny-set"
    result = runner.invoke(
        app, ["synthesize", "--subset", str(tiny_subset), "--out", str(out), "--params", str(params)]
    )
    assert result.exit_code == 0, result.output
    return out


def gallery_run(dataset: Path, out: Path, *extra: str):
    return runner.invoke(app, ["gallery", str(dataset), "--out", str(out), *extra])


def test_gallery_command_end_to_end(dataset, tiny_subset, tmp_path):
    scores = tmp_path / "score.json"
    scores.write_text(json.dumps({**SCORES, "datasets": {"tiny-set": SCORES["datasets"]["toy"]}}))
    out = tmp_path / "pages" / "gallery.html"  # its folder is made
    result = gallery_run(dataset, out, "--per-class", "4", "--subset", str(tiny_subset), "--scores", str(scores))
    assert result.exit_code == 0, result.output
    assert f"{out}: 16 images of 4 classes" in result.stdout
    page = out.read_text()
    assert images(page) == 16 and loads_nothing(page)
    assert "circle" in page and "checker" in page and "wds.WebDataset" in page  # classes and the card
    assert '<tr class="mine"><th>tiny-set</th>' in page  # named after DIR, as `hydramix score` names it
    data = page_data(page)
    first = next(iter_samples(dataset))
    assert data["samples"][0]["meta"] == json.loads(json.dumps(gallery._jsonable(first.meta)))
    assert set(data["sources"]) == {str(i) for s in data["samples"] for i in s["meta"]["sources"]}
    assert not list(out.parent.glob("*.tmp"))
    assert (
        gallery_run(
            dataset, tmp_path / "again.html", "--per-class", "4", "--subset", str(tiny_subset), "--scores", str(scores)
        ).exit_code
        == 0
    )
    assert (tmp_path / "again.html").read_bytes() == out.read_bytes()  # deterministic


def test_gallery_one_line_errors(dataset, tmp_path, make_subset):
    page = tmp_path / "g.html"
    cases = [
        (gallery_run(tmp_path / "nope", page), "nope: no such directory"),
        (gallery_run(tmp_path, page), "not a synthetic dataset (no manifest.json)"),
        (gallery_run(dataset, page, "--per-class", "0"), "--per-class must be >= 1, got 0"),
        (gallery_run(dataset, tmp_path), "is a directory, not a file"),
        (gallery_run(dataset, dataset / "manifest.json" / "g.html"), "cannot write"),
        (gallery_run(dataset, page, "--subset", str(make_subset("other", seed=5))), "not the subset this dataset"),
        (gallery_run(dataset, page, "--scores", str(tmp_path / "none.json")), "none.json: no such file"),
    ]
    for result, message in cases:
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not page.exists()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium; CI does)")
def test_chromium_renders_the_page(dataset, tiny_subset, tmp_path):
    """A real browser draws the page (screenshot with many colours, not a blank page) and runs its script (the
    DOM after load holds the provenance panel of the first sample, with its source images)."""
    page = tmp_path / "gallery.html"
    assert gallery_run(dataset, page, "--subset", str(tiny_subset)).exit_code == 0
    shot = tmp_path / "shot.png"
    common = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    run = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1200, 900)
        colours = rgb.getcolors(maxcolors=1 << 24)
    most_common = max(n for n, _ in colours)
    assert len(colours) > 1000, f"only {len(colours)} distinct colours: the page looks blank"
    assert most_common < 0.8 * 1200 * 900  # no single colour covers the page
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<dl class="dl">' in dom.stdout and "Sources (" in dom.stdout and 'alt="source ' in dom.stdout
