"""The CoOp family's 11 datasets, read from local copies in CoOp's folder layout.

"Learning to Prompt for Vision-Language Models" (CoOp, arXiv:2109.01134) and the papers that
follow it (CoCoOp, KgCoOp, MaPLe, PromptSRC, ...) evaluate on ImageNet, Caltech101, OxfordPets,
StanfordCars, Flowers102, Food101, FGVCAircraft, SUN397, DTD, EuroSAT and UCF101 with fixed
train/val/test splits: the ``split_zhou_<Name>.json`` files of CoOp's DATASETS.md. Each holds
``{"train": [[impath, label, classname], ...], "val": [...], "test": [...]}`` with image paths
relative to the dataset's image folder (StanfordCars: relative to the dataset folder). Two
datasets have no split file: ImageNet (``images/train`` for train, ``images/val`` for both val
and test, class names from ``classnames.txt``, labels in sorted folder order) and FGVCAircraft
(``variants.txt`` in label order and ``images_variant_{train,val,test}.txt``).

Usage: ``data.load("oxford_pets=/data", split="test")`` (``/data`` holds ``oxford_pets/``) or
``--data oxford_pets=/data/oxford_pets``. Layouts and prompts: ``classes/coop.yaml``; few-shot
sets come from vlkit's CoOp-protocol sampler (:func:`vlkit.data.fewshot_indices`: K per class
from train, min(K, 4) per class from val), which is deterministic per (data, seed, K) but draws
other shots than Dassl's ``random.sample`` for the same seed.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..errors import UserError
from .catalog import read_classes, register_dataset
from .dataset import VLDataset
from .files import decode_text
from .standard import StandardOptions, check_split, class_folders, classification, clean_name, find_root, inside, read_json

SPLITS = ("train", "val", "test")
SPEC = read_classes("coop")["datasets"]


def _names_by_label(items_by_split: dict, where: Path) -> list[str]:
    """Class names indexed by label, from every split's ``[impath, label, classname]`` rows."""
    names: dict[int, str] = {}
    for split, items in items_by_split.items():
        for n, item in enumerate(items):
            at = f"{where} {split}[{n}]"
            if not (isinstance(item, list) and len(item) == 3):
                raise UserError(f"{at} is not [impath, label, classname]; this is not a CoOp split file")
            _, label, cname = item
            if isinstance(label, bool) or not isinstance(label, int) or label < 0 or not isinstance(cname, str):
                raise UserError(f"{at} has label {label!r} and class name {cname!r}; expected an integer "
                                ">= 0 and a string, as in CoOp's split files")
            if names.setdefault(label, cname) != cname:
                raise UserError(f"{at} names class {label} {cname!r}, elsewhere {names[label]!r}; "
                                "the split file is inconsistent")
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    if missing or not names:
        raise UserError(f"{where} has no sample of class {missing[0] if missing else 0}; "
                        "labels must run 0..n-1 as in CoOp's split files")
    return [clean_name(names[i]) for i in range(len(names))]


def load_split_file(name: str, split: str, opts: StandardOptions) -> VLDataset:
    spec = SPEC[name]
    check_split(name, split, SPLITS)
    root = find_root(opts.path, spec["folder"], [spec["split_file"]], spec["title"], spec["layout"])
    split_path = root / spec["split_file"]
    data = read_json(split_path, "CoOp split file")
    if not isinstance(data, dict) or any(not isinstance(data.get(s), list) for s in SPLITS):
        raise UserError(f"{split_path} does not hold train/val/test lists; it is not a CoOp split file")
    classnames = _names_by_label({s: data[s] for s in SPLITS}, split_path)
    image_root = root / spec["image_root"]
    items = data[split]
    paths = [image_root / inside(item[0], f"{split_path} {split}[{n}]", image_root) for n, item in enumerate(items)]
    return classification(name, split, paths, [item[1] for item in items], classnames, spec["templates"],
                          opts, split_path, image_root)


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in decode_text(path.read_bytes(), str(path)).splitlines() if ln.strip()]


def load_imagenet(name: str, split: str, opts: StandardOptions) -> VLDataset:
    """CoOp's ImageNet and its domain-shift targets: one folder per class, names from
    ``classnames.txt`` (``WNID name`` lines in ImageNet's label order). Labels follow the sorted
    WNID folders; ImageNetV2's folders are the label numbers 0..999 themselves."""
    spec = SPEC[name]
    splits = tuple(spec["image_dirs"])
    check_split(name, split, splits)
    sub = spec["image_dirs"][split]
    root = find_root(opts.path, spec["folder"], ["classnames.txt", sub], spec["title"], spec["layout"])
    names_file = root / "classnames.txt"
    wnid_name = {}
    for n, line in enumerate(_lines(names_file), 1):
        wnid, _, cname = line.partition(" ")
        if not cname.strip():
            raise UserError(f"{names_file} line {n} is not 'WNID class name'; e.g. 'n01440764 tench'")
        wnid_name[wnid] = cname.strip()
    folder = root / sub
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if spec.get("numbered"):  # ImageNetV2: folder i holds class i of classnames.txt
        order = list(wnid_name)
        folders = [str(i) for i in range(len(order)) if str(i) in found]
        labels_of = [int(f) for f in folders]
        names = [wnid_name[w] for w in order]
    else:
        folders = found
        unnamed = [w for w in folders if w not in wnid_name]
        if unnamed:
            raise UserError(f"{names_file} has no class name for folder {folder / unnamed[0]}; "
                            "use CoOp's classnames.txt (one 'WNID name' per class)")
        names = [wnid_name[w] for w in folders]
        labels_of = list(range(len(folders)))
    paths, positions = class_folders(folder, folders)
    labels = [labels_of[i] for i in positions]
    return classification(name, split, paths, labels, [clean_name(c) for c in names], spec["templates"], opts,
                          names_file, folder)


def load_fgvc_aircraft(split: str, opts: StandardOptions) -> VLDataset:
    """CoOp's FGVCAircraft: ``variants.txt`` (label order), ``images_variant_<split>.txt``."""
    spec = SPEC["fgvc_aircraft"]
    check_split("fgvc_aircraft", split, SPLITS)
    list_file = f"images_variant_{split}.txt"
    root = find_root(opts.path, spec["folder"], ["variants.txt", list_file, "images"], spec["title"], spec["layout"])
    classnames = _lines(root / "variants.txt")
    label_of = {c: i for i, c in enumerate(classnames)}
    paths, labels = [], []
    for n, line in enumerate(_lines(root / list_file), 1):
        image_id, _, variant = line.partition(" ")
        if variant not in label_of:
            raise UserError(f"{root / list_file} line {n} names variant {variant!r}, which is not in "
                            f"{root / 'variants.txt'}; use the files of fgvc-aircraft-2013b/data")
        paths.append(root / "images" / (inside(image_id, f"{root / list_file} line {n}", root / "images") + ".jpg"))
        labels.append(label_of[variant])
    return classification("fgvc_aircraft", split, paths, labels, [clean_name(c) for c in classnames],
                          spec["templates"], opts, root / list_file, root / "images")


def _register(name: str, loader) -> None:
    spec = SPEC[name]
    description = f"CoOp's {spec['title']} from a local copy ({spec['layout']})" + (
        "; a domain-shift target (test only)" if tuple(spec.get("image_dirs", SPLITS)) == ("test",) else "")
    splits = tuple(spec.get("image_dirs", SPLITS))  # the domain-shift targets have only a test split
    register_dataset(name, StandardOptions, views=("class",), splits=splits, default_view="class",
                     description=description, needs_path=True)(loader)


for _name in SPEC:
    _register(_name, partial(load_imagenet, _name) if "image_dirs" in SPEC[_name] else
              load_fgvc_aircraft if _name == "fgvc_aircraft" else partial(load_split_file, _name))
