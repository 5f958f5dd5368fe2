"""The vocabulary of the CLIP Synset Entropy metric: the concepts an image is scored against, and how to ask.

A ``Vocabulary`` is an ordered list of synsets, each an id (a WordNet id such as ``n01440764`` where known)
and the name used in the prompts. The default is the 1,000 ImageNet-1k synsets with the curated zero-shot
class names that open_clip ships (``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES``); their WordNet ids
come from timm's ImageNet metadata (timm is a dependency of open_clip_torch), in the same canonical order.
Prompt templates are open_clip's ImageNet zero-shot templates: ``openai`` (80 prompts) or ``simple`` (7).

A custom vocabulary file is UTF-8 text, one synset per line, either ``wnid<TAB>name`` (wnid = ``n`` + 8
digits) or a plain ``name`` (its id is then the name itself); blank lines and lines starting with
``#`` are ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import HydraMixError

IMAGENET = "imagenet"
_WNID_RE = re.compile(r"^n\d{8}$")
# open_clip's templates are lambdas; calling one with this placeholder recovers its format string.
_SLOT = "{}"
TEMPLATE_SET_NAMES = ("openai", "simple")


@dataclass(frozen=True)
class Vocabulary:
    """ids[i] and names[i] describe synset i; source says where the list came from (for reports)."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError("ids and names must have the same length")
        if not self.ids:
            raise ValueError("a vocabulary needs at least one synset")

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """sha256 over the ordered (id, name) pairs: the cache key of its text embeddings."""
        return _digest([list(self.ids), list(self.names)])


def imagenet_vocabulary() -> Vocabulary:
    """The 1,000 ImageNet-1k synsets in canonical class-index order, with open_clip's zero-shot names."""
    # Imported here, not at module level: open_clip pulls in torchvision and timm (seconds), and every
    # `hydramix` command imports this module.
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    try:
        from timm.data import ImageNetInfo  # shipped with open_clip_torch's timm dependency

        info = ImageNetInfo()
        ids = tuple(info.index_to_label_name(i) for i in range(info.num_classes()))
        source = "imagenet-1k (wnids: timm ImageNetInfo; names: open_clip IMAGENET_CLASSNAMES)"
    except Exception:  # timm absent or changed: fall back to class indices, which name the same synsets
        ids = tuple(f"imagenet:{i:04d}" for i in range(len(IMAGENET_CLASSNAMES)))
        source = "imagenet-1k (ids: class index; names: open_clip IMAGENET_CLASSNAMES)"
    if len(ids) != len(IMAGENET_CLASSNAMES) or not all(_WNID_RE.match(i) or i.startswith("imagenet:") for i in ids):
        raise HydraMixError("installed timm/open_clip ImageNet metadata disagree (expected 1000 synsets)")
    return Vocabulary(ids=ids, names=tuple(IMAGENET_CLASSNAMES), source=source)


def read_vocabulary(path: str | Path) -> Vocabulary:
    """Parse a synset list file (format: module docstring); HydraMixError naming file and line on error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HydraMixError(f"synset file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HydraMixError(f"synset file {path} is not readable UTF-8 text ({exc})") from None
    ids: list[str] = []
    names: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")  # keep a trailing tab: 'wnid<TAB>' is an empty name, not a plain name
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line:
            wnid, _, name = (part.strip() for part in line.partition("\t"))
            if not _WNID_RE.match(wnid):
                raise HydraMixError(f"{path}:{number}: '{wnid}' is not a WordNet id (expected n + 8 digits)")
        else:
            wnid = name = line.strip()
        if not name:
            raise HydraMixError(f"{path}:{number}: synset '{wnid}' has an empty name")
        if wnid in ids:
            raise HydraMixError(f"{path}:{number}: synset '{wnid}' is listed twice")
        ids.append(wnid)
        names.append(name)
    if not ids:
        raise HydraMixError(f"synset file {path} lists no synsets")
    return Vocabulary(ids=tuple(ids), names=tuple(names), source=str(path))


def load_vocabulary(spec: str) -> Vocabulary:
    """``'imagenet'`` -> the default vocabulary; anything else is a synset list file path."""
    return imagenet_vocabulary() if spec == IMAGENET else read_vocabulary(spec)


def templates(name: str) -> tuple[str, ...]:
    """The prompt templates of set ``name`` as strings with one ``{}`` where the concept name goes."""
    if name not in TEMPLATE_SET_NAMES:
        raise HydraMixError(f"unknown template set '{name}'; choose one of {', '.join(TEMPLATE_SET_NAMES)}")
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    chosen = OPENAI_IMAGENET_TEMPLATES if name == "openai" else SIMPLE_IMAGENET_TEMPLATES
    return tuple(t(_SLOT) for t in chosen)


def prompts(name: str, template_set: tuple[str, ...]) -> list[str]:
    """Every template filled with ``name`` (underscores read as spaces: 'maple_tree' -> 'maple tree')."""
    readable = name.replace("_", " ")
    return [t.replace(_SLOT, readable) for t in template_set]


def templates_digest(template_set: tuple[str, ...]) -> str:
    return _digest(list(template_set))


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False).encode()).hexdigest()
