"""CLIP_benchmark's common zero-shot classification and retrieval datasets, from local copies in
their standard on-disk formats (what torchvision and CLIP_benchmark's ``build_dataset`` read).

- ``cifar10`` / ``cifar100``: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``) / ``cifar-100-python/`` (``train``, ``test``, ``meta``), the python pickles.
  They are read with an unpickler that builds only dicts, lists, strings, numbers and numpy
  arrays: a pickle naming any other callable (``os.system``, ...) is refused, never run.
  Class names as CLIP_benchmark uses them (torchvision's: CIFAR-100's ``aquarium_fish`` keeps
  its underscore) and its templates.
- ``imagenet1k``: ImageNet class folders ``train/n01440764/*.JPEG`` and ``val/n01440764/...``
  (test = val); with the 1,000 ImageNet folders, CLIP_benchmark's class names by sorted folder
  order; otherwise a ``classnames.txt`` (``WNID name`` lines, CoOp's file) names them.
- ``mscoco_captions``: COCO-format caption files (``images`` + ``annotations``): CLIP_benchmark's
  ``coco_{split}_karpathy.json`` beside ``train2014/`` / ``val2014/`` (val and test read
  ``val2014/``), else COCO's own ``annotations/captions_{train,val}{2017,2014}.json`` beside
  ``{train,val}{2017,2014}/`` (test reads val: COCO's test images have no captions). Images in
  sorted id order, captions in file order (torchvision's CocoCaptions).
- ``flickr30k`` / ``flickr8k``: CLIP_benchmark's ``flickr30k_{split}_karpathy.txt`` (a header
  line, then ``IMAGE.jpg,caption`` lines; images in the same folder), else Karpathy's
  ``dataset_flickr30k.json`` (``images[].filename/split/sentences[].raw``; ``restval`` counts
  as train) with the images in ``flickr30k-images/``, ``Images/``, ``images/`` or the folder.

- ``wds``: CLIP_benchmark's ``wds/NAME`` benchmarks (``build_wds_dataset``), e.g. a local copy
  of ``wds_cifar10``: ``test/nshards.txt``, ``test/0.tar``..., ``classnames.txt``,
  ``zeroshot_classification_templates.txt``, ``dataset_type.txt``.

``annotation_file`` overrides the caption file of the retrieval datasets (CLIP_benchmark's
``--annotation_file``).
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .catalog import read_classes, register_dataset
from .dataset import ArrayImages, BytesImages, View, VLDataset
from .files import caption_list, content_hash, decode_text, stat_key
from .standard import (StandardOptions, captioned, check_split, class_folders, classification, clean_name,
                       find_root, inside, read_json)

FILE = read_classes("clip_benchmark")


@dataclass
class RetrievalOptions(StandardOptions):
    annotation_file: str = ""  # caption file to read instead of the standard one


# -- CIFAR: pickles read without running code ---------------------------------------------------

try:  # numpy >= 2 (older pickles name numpy.core, which numpy 2 maps here)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]


def _codecs_encode(text, encoding="latin1"):
    return text.encode(encoding)  # how protocol-2 pickles written by Python 3 store bytes


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _ArraysOnly(pickle.Unpickler):
    """Builds builtin containers and numpy arrays; any other global is refused (not imported)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def read_cifar_pickle(path: Path) -> dict:
    """A CIFAR batch as a dict with str keys; a pickle that asks for code is a UserError."""
    try:
        obj = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UserError(f"{path} is not a CIFAR python batch ({e}); replace it with the file from "
                        "cifar-*-python.tar.gz (vlkit reads only arrays and lists from it)") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a pickled {type(obj).__name__}, not a CIFAR batch dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "meta": "batches.meta", "names": "label_names",
                "labels": "labels", "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"folder": "cifar-100-python", "meta": "meta", "names": "fine_label_names",
                 "labels": "fine_labels", "train": ["train"], "test": ["test"]},
}


def _cifar(name: str, split: str, opts: StandardOptions) -> VLDataset:
    spec = CIFAR[name]
    check_split(name, split, ("train", "test"))
    files = [spec["meta"]] + spec[split]
    root = find_root(opts.path, spec["folder"], files, name, f"{spec['folder']}/{{{','.join(files)}}}")
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n)
             for n in read_cifar_pickle(root / spec["meta"])[spec["names"]]]
    arrays, labels = [], []
    for f in spec[split]:
        batch = read_cifar_pickle(root / f)
        data = np.asarray(batch.get("data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(f"{root / f} 'data' is {data.dtype} {data.shape}, not uint8 (N, 3072); "
                            "replace it with the original CIFAR file")
        arrays.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        labels += [int(y) for y in batch[spec["labels"]]]
    images = np.ascontiguousarray(np.concatenate(arrays))
    if len(labels) != len(images) or not all(0 <= y < len(names) for y in labels):
        raise UserError(f"{root} has labels that do not match its images or its {len(names)} classes")
    templates = list(opts.templates) or list(FILE["templates"][name])
    per_class = [[t.format(c) for t in templates] for c in names]  # one list per class, shared
    captions = [per_class[y] for y in labels]
    cid = content_hash(name, split, [stat_key(root / f) for f in files])
    return VLDataset(name, split, ArrayImages(images), captions, {"class": np.array(labels)},
                     [{"path": str(root), "index_in_file": i} for i in range(len(labels))],
                     {"class": View(tuple(names), tuple(templates))}, "class", cid, info={"path": str(root)})


# -- ImageNet-1k class folders ----------------------------------------------------------------

def load_imagenet1k(split: str, opts: StandardOptions) -> VLDataset:
    check_split("imagenet1k", split, ("train", "val", "test"))
    sub = "train" if split == "train" else "val"
    root = find_root(opts.path, "imagenet", [sub], "imagenet1k", "train/n01440764/*.JPEG, val/n01440764/*.JPEG")
    folder = root / sub
    wnids = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names_file = root / "classnames.txt"
    if names_file.is_file():
        table = dict(ln.strip().partition(" ")[::2] for ln in decode_text(names_file.read_bytes(), str(names_file))
                     .splitlines() if ln.strip())
        missing = [w for w in wnids if not table.get(w, "").strip()]
        if missing:
            raise UserError(f"{names_file} names no class for folder {folder / missing[0]}; "
                            "write one 'WNID class name' line per folder")
        classnames = [clean_name(table[w]) for w in wnids]
    elif len(wnids) == len(FILE["imagenet1k_classnames"]):
        classnames = list(FILE["imagenet1k_classnames"])
    else:
        raise UserError(f"{folder} has {len(wnids)} class folders, not ImageNet's 1000; put a classnames.txt "
                        f"('WNID class name' per line) in {root}, or read it as imagefolder={root}")
    paths, labels = class_folders(folder, wnids)
    return classification("imagenet1k", split, paths, labels, classnames, FILE["templates"]["imagenet1k"],
                          opts, folder, folder)


# -- COCO captions ----------------------------------------------------------------------------

def _coco_files(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Candidate (caption file, image folder) pairs, CLIP_benchmark's first."""
    sub = "train" if split == "train" else "val"
    return [(root / f"coco_{split}_karpathy.json", root / f"{sub}2014")] + [
        (root / "annotations" / f"captions_{sub}{year}.json", root / f"{sub}{year}") for year in (2017, 2014)]


def load_mscoco(split: str, opts: RetrievalOptions) -> VLDataset:
    check_split("mscoco_captions", split, ("train", "val", "test"))
    base = Path(opts.path).expanduser()
    root = base / "mscoco" if (base / "mscoco").is_dir() else base
    pairs = _coco_files(root, split)
    if opts.annotation_file:
        pairs = [(Path(opts.annotation_file).expanduser(), folder) for _, folder in pairs]
    found = next(((a, f) for a, f in pairs if a.is_file() and f.is_dir()), None)
    if found is None:
        layout = " or ".join(f"{a.relative_to(root) if a.is_relative_to(root) else a} + {f.name}/" for a, f in pairs)
        raise UserError(f"mscoco_captions not found under {root}: expected {layout}")
    ann_path, folder = found
    doc = read_json(ann_path, "COCO caption file")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations"), list):
        raise UserError(f"{ann_path} has no 'images' and 'annotations' lists; it is not a COCO caption file")
    files = {}
    for n, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise UserError(f"{ann_path} images[{n}] has no 'id'; it is not a COCO caption file")
        files[im["id"]] = inside(im.get("file_name"), f"{ann_path} images[{n}]", folder)
    caps: dict = OrderedDict((i, []) for i in sorted(files))
    for n, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict) or a.get("image_id") not in caps:
            raise UserError(f"{ann_path} annotations[{n}] names no known image_id; the file is damaged")
        caps[a["image_id"]] += caption_list(a.get("caption"), f"{ann_path} annotations[{n}]", "caption")
    ids = [i for i in caps if caps[i]]  # torchvision keeps images without captions; retrieval cannot
    return captioned("mscoco_captions", split, [folder / files[i] for i in ids], [caps[i] for i in ids],
                     opts, ann_path, folder)


# -- Flickr30k / Flickr8k ---------------------------------------------------------------------

def _flickr_txt(path: Path) -> "OrderedDict[str, list[str]]":
    """CLIP_benchmark's ``IMAGE.jpg,caption`` lines after a header (captions may hold commas)."""
    data: OrderedDict[str, list[str]] = OrderedDict()
    lines = decode_text(path.read_bytes(), str(path)).splitlines()
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        image, sep, caption = line.strip().partition(".jpg,")
        if not sep:
            raise UserError(f"{path} line {n} is not 'IMAGE.jpg,caption'; use CLIP_benchmark's annotation file")
        data.setdefault(inside(image + ".jpg", f"{path} line {n}", path.parent), []).append(
            caption_list(caption, f"{path} line {n}", "caption")[0])
    return data


def _flickr_karpathy(path: Path, split: str) -> "OrderedDict[str, list[str]]":
    doc = read_json(path, "Karpathy split file")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise UserError(f"{path} has no 'images' list; it is not Karpathy's dataset_*.json")
    want = {"train", "restval"} if split == "train" else {split}
    data: OrderedDict[str, list[str]] = OrderedDict()
    for n, im in enumerate(doc["images"]):
        where = f"{path} images[{n}]"
        if not isinstance(im, dict) or not isinstance(im.get("sentences"), list):
            raise UserError(f"{where} has no 'sentences' list; it is not Karpathy's dataset_*.json")
        if im.get("split") in want:
            raw = [s.get("raw") if isinstance(s, dict) else s for s in im["sentences"]]
            data[inside(im.get("filename"), where, path.parent)] = caption_list(raw, where, "sentences")
    return data


def _flickr(name: str, split: str, opts: RetrievalOptions) -> VLDataset:
    check_split(name, split, ("train", "val", "test"))
    txt, karpathy = f"{name}_{split}_karpathy.txt", f"dataset_{name}.json"
    base = Path(opts.path).expanduser()
    root = next((c for c in (base / name, base) if (c / txt).is_file() or (c / karpathy).is_file()), None)
    if opts.annotation_file:
        ann = Path(opts.annotation_file).expanduser()
        root, use_txt = root or base, ann.suffix == ".txt"
    elif root is None:
        raise UserError(f"{name} not found under {base}: expected {txt} (CLIP_benchmark's) or {karpathy} "
                        "(Karpathy's) beside the images")
    else:
        use_txt = (root / txt).is_file()
        ann = root / (txt if use_txt else karpathy)
    data = _flickr_txt(ann) if use_txt else _flickr_karpathy(ann, split)
    if not data:
        raise UserError(f"{ann} lists no images of split {split!r}")
    first = next(iter(data))
    folders = [root] if use_txt else [root / d for d in (f"{name}-images", "Images", "images", "")]
    folder = next((f for f in folders if (f / first).is_file()), folders[0])
    return captioned(name, split, [folder / f for f in data], list(data.values()), opts, ann, folder)


# -- CLIP_benchmark's webdataset benchmarks (wds/NAME) --------------------------------------------

def load_wds(split: str, opts: StandardOptions) -> VLDataset:
    """CLIP_benchmark's ``build_wds_dataset`` layout: ``SPLIT/nshards.txt`` + ``SPLIT/0..n-1.tar``,
    ``classnames.txt``, ``zeroshot_classification_templates.txt`` (``{c}`` for the class name),
    ``dataset_type.txt`` (``retrieval``: captions are the lines of each ``.txt``; otherwise the
    ``.cls`` label). Local copies only; the shards are indexed as :mod:`.webdataset` does."""
    from .webdataset import _label, index_shard

    check_split("wds", split, ("train", "test"))
    root = find_root(opts.path, "", [f"{split}/nshards.txt"], "wds", f"{split}/nshards.txt, {split}/0.tar, ..., "
                     "classnames.txt, zeroshot_classification_templates.txt (CLIP_benchmark's wds/ layout)")

    def text(name: str) -> str:
        return decode_text((root / name).read_bytes(), str(root / name))

    n_text = text(f"{split}/nshards.txt").strip()
    if not n_text.isdigit() or int(n_text) < 1:
        raise UserError(f"{root / split / 'nshards.txt'} holds {n_text[:20]!r}, not a shard count")
    kind = text("dataset_type.txt").strip().lower() if (root / "dataset_type.txt").is_file() else "classification"
    retrieval = kind == "retrieval"
    names = [] if retrieval else [ln.strip() for ln in text("classnames.txt").splitlines() if ln.strip()]
    templates = list(opts.templates) or ([] if retrieval else [
        t.strip().replace("{c}", "{}") for t in text("zeroshot_classification_templates.txt").splitlines() if t.strip()])
    readers, captions, labels, meta = [], [], [], []
    shards = [root / split / f"{i}.tar" for i in range(int(n_text))]
    for shard in shards:
        if not shard.is_file():
            raise UserError(f"wds shard not found: {shard} ({split}/nshards.txt says {n_text}); re-copy the dataset")
        for smp in index_shard(shard, opts.strict):
            if "image" not in smp:
                continue
            where = f"{shard}:{smp['key']}"
            if retrieval:
                caps = [c.strip() for c in smp.get("txt", b"").decode("utf-8", "replace").splitlines() if c.strip()]
                captions.append(caption_list(caps or "", where + ".txt", "txt"))
            else:
                label = _label(smp, {}, where)
                if not isinstance(label, int) or label >= len(names):
                    raise UserError(f"{where}.cls is {label!r}, not one of the {len(names)} classes of classnames.txt")
                labels.append(label)
            readers.append(smp["image"])
            meta.append({"shard": str(shard), "key": smp["key"]})
    if not readers:
        raise UserError(f"wds dataset {root} split {split!r} holds no images")
    if not retrieval:
        per_class = [[t.format(c) for t in templates] for c in names]
        captions = [per_class[y] for y in labels]
    cid = content_hash("wds", split, [stat_key(p) for p in shards], [m["key"] for m in meta], labels, captions)
    image_names = [f"{m['shard']}:{m['key']}" for m in meta]
    views = {} if retrieval else {"class": View(tuple(names), tuple(templates))}
    return VLDataset("wds", split, BytesImages(readers, image_names), captions,
                     {} if retrieval else {"class": np.array(labels)}, meta, views,
                     None if retrieval else "class", cid, info={"path": str(root), "type": kind})


def _register() -> None:
    what = {
        "cifar10": ("CIFAR-10 from cifar-10-batches-py/ (the python pickles, read without running code)", ("class",)),
        "cifar100": ("CIFAR-100 from cifar-100-python/ (the python pickles, read without running code)", ("class",)),
        "imagenet1k": ("ImageNet-1k class folders train/WNID/, val/WNID/ with CLIP_benchmark's class names",
                       ("class",)),
        "mscoco_captions": ("COCO captions: coco_{split}_karpathy.json + val2014/, or "
                            "annotations/captions_val2017.json + val2017/", ()),
        "flickr30k": ("Flickr30k: flickr30k_{split}_karpathy.txt or Karpathy's dataset_flickr30k.json + images", ()),
        "flickr8k": ("Flickr8k: flickr8k_{split}_karpathy.txt or Karpathy's dataset_flickr8k.json + images", ()),
        "wds": ("CLIP_benchmark's wds/ benchmarks: test/nshards.txt + test/0..n-1.tar, classnames.txt, "
                "zeroshot_classification_templates.txt, dataset_type.txt", ("class",)),
    }
    loaders = {
        "cifar10": (lambda split, o: _cifar("cifar10", split, o), StandardOptions),
        "cifar100": (lambda split, o: _cifar("cifar100", split, o), StandardOptions),
        "imagenet1k": (load_imagenet1k, StandardOptions),
        "mscoco_captions": (load_mscoco, RetrievalOptions),
        "flickr30k": (lambda split, o: _flickr("flickr30k", split, o), RetrievalOptions),
        "flickr8k": (lambda split, o: _flickr("flickr8k", split, o), RetrievalOptions),
        "wds": (load_wds, StandardOptions),
    }
    for name, (desc, views) in what.items():
        fn, options = loaders[name]
        splits = ("train", "test") if name.startswith("cifar") or name == "wds" else ("train", "val", "test")
        default = "class" if views and name != "wds" else None  # a wds set may be retrieval (no view)
        register_dataset(name, options, views=views, splits=splits, default_view=default,
                         description=f"{desc}; CLIP_benchmark's dataset of that name", needs_path=True)(fn)


_register()
