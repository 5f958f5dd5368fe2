"""A picture of a dataset: one static, self-contained HTML page for a synthetic dataset.

``render_gallery`` takes what a dataset directory holds (its manifest, the first samples of every class, the
dataset card) and optionally the source images of its subset and the CLIP scores of ``hydramix score``, and
returns the page as a string. The page needs no network and no server: images are inlined as ``data:`` URIs,
the CSS and the little JavaScript (the provenance panel) are inline, and nothing refers to another file. The
same inputs give the same bytes (no timestamps).

Pure: no file is read or written here; ``make_gallery`` does that.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.data.imageset import encode_png
from pipeline.synthesis.shards.format import SampleLike

DEFAULT_PER_CLASS = 24
# Sample provenance shown in the panel, in this order, with a label; other keys are listed after them.
_PROVENANCE_LABELS = (
    ("sample_id", "sample id"),
    ("class", "class"),
    ("n_sources", "N (sources)"),
    ("sources", "source indices"),
    ("flipped", "flipped"),
    ("mask_kind", "mask kind"),
    ("largest_share", "largest share"),
    ("seed", "seed"),
    ("mode", "mode"),
)
_SCORE_COLUMNS = (
    ("h_class", "H<sub>class</sub>"),
    ("h_image", "H<sub>image</sub>"),
    ("mi", "MI"),
    ("consistency", "consistency"),
    ("n_images", "images"),
)


def pick_samples(samples: Iterable[SampleLike], n_classes: int, per_class: int) -> dict[int, list[SampleLike]]:
    """The first ``per_class`` samples of every class, in dataset order: {label: samples}.

    Stops reading ``samples`` as soon as every class has ``per_class`` (sample ``s`` has class ``s % C``, so
    that is after ``per_class * C`` samples: a gallery of a large dataset reads only its first shard or two).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    picked: dict[int, list[SampleLike]] = {c: [] for c in range(n_classes)}
    missing = n_classes
    for sample in samples:
        group = picked.get(int(sample.label))
        if group is None or len(group) >= per_class:
            continue
        group.append(sample)
        if len(group) == per_class:
            missing -= 1
            if missing == 0:
                break
    return picked


def data_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> ``data:image/png;base64,...`` (lossless)."""
    return "data:image/png;base64," + base64.b64encode(encode_png(np.ascontiguousarray(image))).decode("ascii")


def split_card(text: str) -> tuple[str, str]:
    """(YAML front matter without its ``---`` lines, Markdown body) of a dataset card; ("", text) without one."""
    if text.startswith("---\n"):
        block, sep, body = text[4:].partition("\n---\n")
        if sep:
            return block, body.lstrip("\n")
    return "", text


def render_gallery(
    manifest: Mapping[str, Any],
    picked: Mapping[int, Sequence[SampleLike]],
    *,
    card: str | None = None,
    scores: Mapping[str, Any] | None = None,
    scores_name: str | None = None,
    sources: Mapping[int, np.ndarray] | None = None,
) -> str:
    """The gallery page (HTML text) of a synthetic dataset.

    manifest: its ``manifest.json``; picked: {class id: samples to show} (``pick_samples``); card: the text of
    its ``README.md``; scores: the metrics JSON of ``hydramix score`` (a ``"skipped"`` one is shown as such);
    scores_name: the name this dataset has there (its row is highlighted and its per-class figures shown);
    sources: {dataset index: (H, W, 3) uint8 image} of the subset's train images, shown beside each sample.
    """
    class_names = list(manifest["class_names"])
    resolution = int(manifest["resolution"])
    thumb = int(min(128, max(48, 2 * resolution)))  # CSS px: small images are drawn enlarged, pixelated
    name = str(manifest.get("name") or "synthetic dataset")
    per_class_scores = _per_class_scores(scores, scores_name)

    records: list[dict[str, Any]] = []
    sections = []
    for label, class_name in enumerate(class_names):
        shown = list(picked.get(label, ()))
        tiles = []
        for sample in shown:
            index = len(records)
            meta = dict(sample.meta)
            records.append({"key": sample.key, "label": int(sample.label), "meta": _jsonable(meta)})
            tip = f"{class_name} · sample {meta.get('sample_id', sample.key)}"
            tiles.append(
                f'<img src="{data_uri(np.asarray(sample.image))}" data-i="{index}" tabindex="0" '
                f'alt="{_e(tip)}" title="{_e(tip)}" width="{thumb}" height="{thumb}">'
            )
        total = manifest.get("counts", {}).get(class_name)
        count = f"{len(shown)} of {total}" if total is not None else f"{len(shown)}"
        figures = per_class_scores.get(class_name) or {}  # this set's CLIP figures for the class, if scored
        scored = " · ".join(f"{head} {_num(figures[key])}" for key, head in _SCORE_COLUMNS[:4] if key in figures)
        score_line = f'<span class="clsscore">{scored}</span>' if scored else ""
        grid = "".join(tiles) if tiles else '<p class="note">no samples of this class in the dataset</p>'
        sections.append(
            f'<section class="cls" id="class-{label}"><h2><span class="chip" style="--hue:{_hue(label)}"></span>'
            f'{_e(class_name)} <span class="muted">class {label} · {count} shown</span>{score_line}</h2>'
            f'<div class="grid">{grid}</div></section>'
        )

    used = sorted({int(i) for r in records for i in r["meta"].get("sources", []) if isinstance(i, int)})
    source_uris = {str(i): data_uri(sources[i]) for i in used if sources is not None and i in sources}
    data = {
        "samples": records,
        "sources": source_uris,
        "haveSources": sources is not None,
        "classes": class_names,
        "labels": [list(pair) for pair in _PROVENANCE_LABELS],
    }
    nav = "".join(
        f'<a href="#class-{i}"><span class="chip" style="--hue:{_hue(i)}"></span>{_e(c)}</a>'
        for i, c in enumerate(class_names)
    )
    card_html = _card_section(card)
    body = f"""<header>
<h1>{_e(name)}</h1>
<p class="sub">{_summary(manifest)}</p>
<nav>{nav}<a class="section" href="#figures">figures</a><a class="section" href="#card">dataset card</a></nav>
</header>
<div class="layout">
<main>
<section id="figures" class="figures">
<div class="panel">{_diagnostics_panel(manifest.get("diagnostics"))}</div>
<div class="panel">{_scores_panel(scores, scores_name)}</div>
</section>
{"".join(sections)}
{card_html}
</main>
<aside id="detail" aria-live="polite"><p class="note">Hover over an image to see its provenance; click to pin it
(click again or press Esc to unpin).</p></aside>
</div>"""
    payload = json.dumps(data, sort_keys=True, separators=(",", ":")).replace("<", "\\u003c")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(name)}: hydramix gallery</title>
<style>{_CSS.replace("THUMB", str(thumb))}</style>
</head>
<body>
{body}
<script type="application/json" id="gallery-data">{payload}</script>
<script>{_JS}</script>
</body>
</html>
"""


# ------------------------------------------------------------------------------------------------------------
# Pieces of the page


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _hue(label: int) -> int:
    return (label * 137) % 360  # golden-angle steps: neighbouring classes get distant hues


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    """Provenance for the page's JSON: integers beyond JavaScript's 2**53 (the uint64 seed) become strings."""

    def fix(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
            return str(v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return {k: fix(v) for k, v in meta.items()}


def _summary(manifest: Mapping[str, Any]) -> str:
    r = int(manifest["resolution"])
    synthesis = manifest.get("synthesis") or {}
    generator = manifest.get("generator")
    subset = manifest.get("subset") or {}
    mode = synthesis.get("mode", "generator" if generator else "pixel")
    parts = [
        f"{int(manifest['total']):,} synthetic {r}×{r} images",
        f"{len(manifest['class_names'])} classes",
        f"{len(manifest.get('shards', []))} shard(s)",
        f"{_e(mode)} mode",
    ]
    if generator:
        sha = _e(str(generator.get("sha256", "?"))[:12])
        parts.append(f"generator <code>{sha}</code> ({_e(generator.get('step'))} steps)")
    if subset:
        dataset, k, seed = (_e(subset.get(key, "?")) for key in ("dataset", "k", "seed"))
        parts.append(f"subset {dataset}, k = {k}, seed {seed}")
    return " · ".join(parts)


def _diagnostics_panel(diagnostics: Mapping[str, Any] | None) -> str:
    if not diagnostics:
        return '<h2>Set diagnostics</h2><p class="note">The manifest holds no diagnostics.</p>'
    syn, real = diagnostics.get("synthetic", {}), diagnostics.get("real", {})
    rows = []
    for key, label in (
        ("hf_share", "high-frequency power share"),
        ("diversity", "within-class diversity"),
        ("largest_source_share", "mean largest-source area share"),
        ("n_images", "images measured"),
    ):
        cells = []
        for figures in (syn, real):
            value = figures.get(key)
            text = _num(value)
            std = figures.get(f"{key}_std")
            if std is not None and value is not None:
                text += f' <span class="muted">± {_num(std)}</span>'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Set diagnostics</h2>"
        f"<table><thead><tr><th></th><th>synthetic</th><th>real subset</th></tr></thead><tbody>{''.join(rows)}"
        f'</tbody></table><p class="note">On the first {_e(diagnostics.get("prefix_per_class", "?"))} images per '
        "class (docs/diagnostics.md).</p>"
    )


def _scores_panel(scores: Mapping[str, Any] | None, scores_name: str | None) -> str:
    title = "<h2>CLIP Synset Entropy</h2>"
    if scores is None:
        given = "<code>--scores metrics.json</code> of <code>hydramix score</code>"
        return title + f'<p class="note">No scores given ({given}).</p>'
    if scores.get("status") != "ok":
        reason = scores.get("reason", "no reason recorded")
        return title + f'<p class="note">Scoring was {_e(scores.get("status", "not run"))}: {_e(reason)}</p>'
    head = "".join(f"<th>{label}</th>" for _, label in _SCORE_COLUMNS)
    rows = []
    for set_name, figures in (scores.get("datasets") or {}).items():
        mine = ' class="mine"' if set_name == scores_name else ""
        cells = "".join(f"<td>{_num(figures.get(key))}</td>" for key, _ in _SCORE_COLUMNS)
        rows.append(f"<tr{mine}><th>{_e(set_name)}</th>{cells}</tr>")
    model = f"{_e(scores.get('model', '?'))} / {_e(scores.get('pretrained', '?'))}"
    return (
        title + f"<table><thead><tr><th>set</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">Nats, unweighted means over classes; {model} (docs/metric.md).</p>'
    )


def _per_class_scores(scores: Mapping[str, Any] | None, scores_name: str | None) -> dict[str, dict[str, Any]]:
    if not scores or scores.get("status") != "ok" or scores_name is None:
        return {}
    return dict(((scores.get("datasets") or {}).get(scores_name) or {}).get("per_class") or {})


def _card_section(card: str | None) -> str:
    if card is None:
        return '<section id="card" class="panel"><h2>Dataset card</h2><p class="note">No README.md.</p></section>'
    front, body = split_card(card)
    meta = (
        f"<details><summary>Hugging Face metadata (front matter)</summary><pre>{_e(front)}</pre></details>"
        if front
        else ""
    )
    return f'<section id="card" class="panel"><h2>Dataset card</h2><article>{_markdown(body)}</article>{meta}</section>'


def _inline(text: str) -> str:
    """Escaped text with `code` and **bold** spans."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(f"<code>{_e(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _e(part)))
    return "".join(out)


def _markdown(text: str) -> str:
    """The Markdown a dataset card uses (headings, paragraphs, lists, fenced code) as HTML; all text escaped."""
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            code = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(lines[i])
                i += 1
            out.append(f"<pre><code>{_e(chr(10).join(code))}</code></pre>")
        elif heading := re.match(r"(#{1,6})\s+(.*)", line):
            flush()
            level = min(6, len(heading[1]) + 2)  # the card's "#" sits under the page's h2
            out.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
        elif line.startswith(("- ", "* ")):
            if para:
                flush()
            items.append(line[2:])
        elif not line.strip():
            flush()
        elif items:
            items[-1] += " " + line.strip()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


_CSS = """
:root { --bg: #f4f5f7; --panel: #fff; --ink: #1d2430; --muted: #6b7280; --line: #e3e6eb; --accent: #2f6fde; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { padding: 18px 24px 10px; background: var(--panel); border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 22px; }
.sub { margin: 0 0 10px; color: var(--muted); }
nav { display: flex; flex-wrap: wrap; gap: 6px; }
nav a { display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px; border: 1px solid var(--line);
  border-radius: 999px; color: var(--ink); text-decoration: none; background: var(--bg); font-size: 13px; }
nav a:hover { border-color: var(--accent); }
nav a.section { background: var(--panel); color: var(--accent); }
.chip { display: inline-block; width: 10px; height: 10px; border-radius: 3px; background: hsl(var(--hue) 65% 50%); }
.layout { display: flex; align-items: flex-start; }
main { flex: 1; min-width: 0; padding: 16px 24px 40px; }
aside { position: sticky; top: 0; width: 320px; flex: none; height: 100vh; overflow-y: auto; padding: 16px;
  background: var(--panel); border-left: 1px solid var(--line); }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 14px; }
.figures .panel { overflow-x: auto; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
h2 { font-size: 16px; margin: 0 0 10px; display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.muted { color: var(--muted); font-weight: normal; font-size: 13px; }
.note { color: var(--muted); font-size: 13px; margin: 8px 0 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { text-align: right; padding: 4px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th:first-child { text-align: left; font-weight: normal; white-space: normal; }
thead th { font-weight: 600; color: var(--muted); font-size: 12px; }
tr.mine { background: #eef4ff; }
tr.mine th { font-weight: 600; }
.cls { margin-top: 22px; }
.clsscore { color: var(--muted); font-weight: normal; font-size: 12px; margin-left: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; }
.grid img { width: THUMBpx; height: THUMBpx; image-rendering: pixelated; border-radius: 3px; cursor: pointer;
  outline: 2px solid transparent; outline-offset: 1px; background: #ddd; }
.grid img:hover, .grid img:focus { outline-color: var(--accent); }
.grid img.pinned { outline: 3px solid #e8590c; }
#card { margin-top: 26px; }
#card article { max-width: 900px; }
#card h3 { font-size: 18px; margin: 6px 0 8px; }
#card h4 { font-size: 15px; margin: 18px 0 6px; }
#card p { margin: 6px 0; }
pre { background: #f1f3f6; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; overflow-x: auto;
  font-size: 12px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
p code, li code { background: #f1f3f6; padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
details { margin-top: 12px; }
summary { cursor: pointer; color: var(--muted); }
.big { width: 100%; max-width: 288px; aspect-ratio: 1; image-rendering: pixelated; border-radius: 6px;
  display: block; margin: 4px 0 10px; background: #ddd; }
.dl { display: grid; grid-template-columns: auto 1fr; gap: 3px 10px; margin: 0 0 12px; font-size: 13px; }
.dl dt { color: var(--muted); }
.dl dd { margin: 0; word-break: break-all; font-variant-numeric: tabular-nums; }
.sources { display: grid; grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)); gap: 8px; }
.sources figure { margin: 0; }
.sources img { width: 100%; aspect-ratio: 1; image-rendering: pixelated; border-radius: 4px; display: block; }
.sources figcaption { font-size: 12px; color: var(--muted); }
aside h3 { margin: 0 0 2px; font-size: 15px; }
@media (max-width: 800px) { .layout { display: block; } aside { position: static; width: auto; height: auto; } }
"""

_JS = """
(function () {
  const data = JSON.parse(document.getElementById("gallery-data").textContent);
  const panel = document.getElementById("detail");
  let pinned = null;
  const entities = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => entities[c]);
  const fmt = (v) => Array.isArray(v) ? v.map(fmt).join(", ")
    : (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : String(v));
  function show(img) {
    const s = data.samples[+img.dataset.i];
    const m = s.meta;
    const labels = new Map(data.labels);
    const known = [...labels.keys()];
    let rows = "";
    for (const k of known.concat(Object.keys(m).filter((k) => !labels.has(k)).sort())) {
      if (k in m) rows += "<dt>" + esc(labels.get(k) || k) + "</dt><dd>" + esc(fmt(m[k])) + "</dd>";
    }
    let src = "";
    const ids = Array.isArray(m.sources) ? m.sources : [];
    if (ids.length) {
      src = "<h3>Sources (" + ids.length + ")</h3>";
      if (data.haveSources) {
        src += '<div class="sources">' + ids.map((id, j) => {
          const uri = data.sources[String(id)];
          const flip = Array.isArray(m.flipped) && m.flipped[j] ? " · flipped" : "";
          return "<figure>" + (uri ? '<img alt="source ' + esc(id) + '" src="' + uri + '">' : "") +
            "<figcaption>index " + esc(id) + flip + (uri ? "" : " (not in the subset)") + "</figcaption></figure>";
        }).join("") + "</div>";
      } else {
        src += '<p class="note">Pass <code>--subset DIR</code> to show the source images.</p>';
      }
    }
    panel.innerHTML = "<h3>" + esc(data.classes[s.label] || s.label) + " · " + esc(s.key) + "</h3>" +
      '<img class="big" alt="" src="' + img.src + '"><dl class="dl">' + rows + "</dl>" + src +
      (pinned ? '<p class="note">Pinned: click the image again or press Esc to unpin.</p>' : "");
  }
  function unpin() { if (pinned) { pinned.classList.remove("pinned"); pinned = null; } }
  document.querySelectorAll(".grid img").forEach((img) => {
    img.addEventListener("mouseenter", () => { if (!pinned) show(img); });
    img.addEventListener("focus", () => { if (!pinned) show(img); });
    img.addEventListener("click", () => {
      const same = pinned === img;
      unpin();
      if (!same) { pinned = img; img.classList.add("pinned"); }
      show(img);
    });
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") unpin(); });
  const first = document.querySelector(".grid img");
  if (first) show(first);
})();
"""
