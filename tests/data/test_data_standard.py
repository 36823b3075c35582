"""Standard benchmark datasets from local copies (vlkit.data.coop, vlkit.data.clipbench), tested
on tiny fakes written in the exact on-disk layouts: CoOp's DATASETS.md folders and split_zhou
files, CIFAR's python pickles, ImageNet class folders, COCO caption files, Flickr's Karpathy
files. Every image is a solid colour that encodes (class, position), so a test can tell that
sample i really is the file the split file names."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from vlkit import data
from vlkit.errors import UserError

COOP_JSON = {  # name -> (dataset folder, split file, image folder (relative), CoOp's prompt)
    "caltech101": ("caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories", "a photo of a {}."),
    "oxford_pets": ("oxford_pets", "split_zhou_OxfordPets.json", "images", "a photo of a {}, a type of pet."),
    "stanford_cars": ("stanford_cars", "split_zhou_StanfordCars.json", "", "a photo of a {}."),
    "oxford_flowers": ("oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg", "a photo of a {}, a type of flower."),
    "food101": ("food-101", "split_zhou_Food101.json", "images", "a photo of {}, a type of food."),
    "sun397": ("sun397", "split_zhou_SUN397.json", "SUN397", "a photo of a {}."),
    "dtd": ("dtd", "split_zhou_DescribableTextures.json", "images", "{} texture."),
    "eurosat": ("eurosat", "split_zhou_EuroSAT.json", "2750", "a centered satellite photo of {}."),
    "ucf101": ("ucf101", "split_zhou_UCF101.json", "UCF-101-midframes", "a photo of a person doing {}."),
}
CLASSES = ["Abyssinian", "american_bulldog", "basset_hound"]  # as in split_zhou_OxfordPets.json


def color(label: int, i: int) -> tuple[int, int, int]:
    return (40 * label + 10, 5 * i, 200)  # steps of 40 and 5: far apart beside JPEG's error


def write_image(path, rgb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), rgb).save(path)


def pixel(ds, i: int) -> tuple[int, int, int]:
    """The colour of sample i, rounded to the colour grid (JPEG moves a solid colour by 1 or 2)."""
    r, g, b = ds[i].image.getpixel((0, 0))
    return (round((r - 10) / 40) * 40 + 10, round(g / 5) * 5, round(b / 50) * 50)


def fake_coop(root, name: str, per_split=(2, 1, 2)):
    """$DATA/<folder>/ with a split_zhou file listing per_split images per class and the images."""
    folder, split_file, image_root, _ = COOP_JSON[name]
    ds_dir = root / folder
    split, n = {}, 0
    for s, k in zip(("train", "val", "test"), per_split):
        rows = []
        for label, cname in enumerate(CLASSES):
            for _ in range(k):
                rel = f"{cname}/{cname}_{n:03d}.jpg".replace(" ", "_")
                write_image(ds_dir / image_root / rel, color(label, n))
                rows.append([rel, label, cname])
                n += 1
        split[s] = rows
    (ds_dir / split_file).write_text(json.dumps(split))
    return ds_dir, split


@pytest.mark.parametrize("name", sorted(COOP_JSON))
def test_coop_split_file_datasets_read_the_split_exactly(tmp_path, name):
    _, split = fake_coop(tmp_path, name)
    for s in ("train", "val", "test"):
        ds = data.load(f"{name}={tmp_path}", split=s)
        assert len(ds) == len(split[s])
        assert ds.targets.tolist() == [row[1] for row in split[s]]
        # the image at position i is the file row i names (its colour encodes label and number)
        for i, row in enumerate(split[s]):
            n = int(row[0].rsplit("_", 1)[1][:3])
            assert pixel(ds, i) == color(row[1], n)
    assert ds.classnames == ["Abyssinian", "american bulldog", "basset hound"]  # "_" read as a space
    template = COOP_JSON[name][3]
    assert ds.templates == [template]
    assert ds[0].captions == [template.format(ds.classnames[ds.targets[0]])]


def test_coop_path_may_be_the_dataset_folder_itself(tmp_path):
    ds_dir, split = fake_coop(tmp_path, "oxford_pets")
    a = data.load(f"oxford_pets={ds_dir}", split="test")
    b = data.load(f"oxford_pets={tmp_path}", split="test")
    assert a.targets.tolist() == b.targets.tolist() == [row[1] for row in split["test"]]
    assert a.fingerprint() == b.fingerprint()


def test_coop_missing_root_names_the_layout(tmp_path):
    with pytest.raises(UserError) as e:
        data.load(f"oxford_pets={tmp_path}", split="train")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json") in msg
    assert "oxford_pets/images/" in msg


def test_coop_split_file_cannot_point_outside_and_must_be_consistent(tmp_path):
    ds_dir, split = fake_coop(tmp_path, "dtd")
    path = ds_dir / "split_zhou_DescribableTextures.json"
    bad = dict(split, test=[["../../etc/passwd", 0, "Abyssinian"]])
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="points outside"):
        data.load(f"dtd={tmp_path}", split="test")
    bad = dict(split, val=[[split["val"][0][0], 0, "another_name"]])
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="inconsistent"):
        data.load(f"dtd={tmp_path}", split="train")
    with pytest.raises(UserError, match="no split 'all'"):
        data.load(f"dtd={tmp_path}", split="all")


def test_coop_fewshot_protocol_runs_on_the_loaded_splits(tmp_path):
    """K shots per class from train and min(K, 4) from val, through the adapt data road."""
    from vlkit.adapt import splits

    fake_coop(tmp_path, "eurosat", per_split=(5, 6, 1))
    train = splits.load_split(f"eurosat={tmp_path}", "train")
    val = splits.load_split(f"eurosat@path={tmp_path}", "val")  # the adapt grammar's option form
    tr, va = data.fewshot_splits(train, val, shots=3, seed=1)
    assert sorted(np.bincount(tr.targets).tolist()) == [3, 3, 3]
    assert sorted(np.bincount(va.targets).tolist()) == [3, 3, 3]
    tr16, va16 = data.fewshot_splits(train, val, shots=5, seed=1)
    assert np.bincount(tr16.targets).tolist() == [5, 5, 5] and np.bincount(va16.targets).tolist() == [4, 4, 4]
    again, _ = data.fewshot_splits(train, val, shots=3, seed=1)
    assert again.fingerprint() == tr.fingerprint()


def test_coop_imagenet_sorted_folders_and_classnames_txt(tmp_path):
    root = tmp_path / "imagenet"
    wnids = ["n02", "n01", "n03"]  # label order is the sorted order: n01, n02, n03
    names = {"n01": "tench", "n02": "great white shark", "n03": "tiger_shark"}
    for s, k in (("train", 2), ("val", 1)):
        for w in wnids:
            label = sorted(wnids).index(w)
            for j in range(k):
                write_image(root / "images" / s / w / f"{w}_{j}.JPEG", color(label, j))
    (root / "classnames.txt").write_text("".join(f"{w} {names[w]}\n" for w in wnids))
    train = data.load(f"imagenet={tmp_path}", split="train")
    assert train.classnames == ["tench", "great white shark", "tiger shark"]
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert [pixel(train, i) for i in range(6)] == [color(y, j) for y in range(3) for j in range(2)]
    test, val = data.load(f"imagenet={tmp_path}", split="test"), data.load(f"imagenet={tmp_path}", split="val")
    assert test.targets.tolist() == val.targets.tolist() == [0, 1, 2]  # CoOp: val is the test set
    (root / "classnames.txt").write_text("n01 tench\nn02 great white shark\n")
    with pytest.raises(UserError, match="no class name for folder .*n03"):
        data.load(f"imagenet={tmp_path}", split="train")


def test_coop_fgvc_aircraft_variant_files(tmp_path):
    root = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F/A-18"]
    (root / "images").mkdir(parents=True)
    (root / "variants.txt").write_text("\n".join(variants) + "\n")
    rows = {"train": [("1025794", 2), ("1340192", 0)], "val": [("0056978", 1)], "test": [("2073134", 2)]}
    for s, items in rows.items():
        (root / f"images_variant_{s}.txt").write_text("".join(f"{i} {variants[y]}\n" for i, y in items))
        for n, (i, y) in enumerate(items):
            write_image(root / "images" / f"{i}.jpg", color(y, n))
    ds = data.load(f"fgvc_aircraft={tmp_path}", split="train")
    assert ds.classnames == variants
    assert ds.targets.tolist() == [2, 0]
    assert [pixel(ds, 0), pixel(ds, 1)] == [color(2, 0), color(0, 1)]
    assert ds[0].captions == ["a photo of a F/A-18, a type of aircraft."]


# -- CLIP_benchmark's formats --------------------------------------------------------------------

def cifar_rows(labels, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)


def py2_pickle(batch: dict) -> bytes:
    """A CIFAR batch as Python 2's cPickle wrote the real files (protocol 2): str keys and array
    bytes as byte strings (SHORT_BINSTRING / BINSTRING), arrays by numpy.core.multiarray."""
    import struct

    def s(text) -> bytes:
        raw = text if isinstance(text, bytes) else text.encode("latin1")
        return (b"U" + bytes([len(raw)]) + raw) if len(raw) < 256 else (b"T" + struct.pack("<I", len(raw)) + raw)

    def integer(i: int) -> bytes:
        return b"J" + struct.pack("<i", i)

    def value(v) -> bytes:
        if isinstance(v, np.ndarray):
            shape = b"".join(integer(n) for n in v.shape) + b"\x86"  # TUPLE2
            dtype = b"cnumpy\ndtype\n" + s("u1") + integer(0) + integer(1) + b"\x87R"
            dstate = b"(" + integer(3) + s("|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + s("b")
                    + b"\x87R(" + integer(1) + shape + dtype + dstate + b"\x89" + s(v.tobytes()) + b"tb")
        return b"](" + b"".join(integer(x) if isinstance(x, int) else s(x) for x in v) + b"e"

    return b"\x80\x02}(" + b"".join(s(k) + value(v) for k, v in batch.items()) + b"u."


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))  # the CIFAR files are protocol-2 pickles


def test_cifar10_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump(d / "batches.meta", {"label_names": names, "num_vis": 3072})
    train_labels = []
    for i in range(1, 6):
        labels = [i, (i + 3) % 10]
        dump(d / f"data_batch_{i}", {"data": cifar_rows(labels, i), "labels": labels, "batch_label": f"b{i}"})
        train_labels += labels
    test_data = cifar_rows([9, 0, 4], 99)
    (d / "test_batch").write_bytes(py2_pickle({"batch_label": "testing batch 1 of 1", "labels": [9, 0, 4],
                                               "data": test_data}))  # the real files' byte form
    train = data.load(f"cifar10={tmp_path}", split="train")
    assert len(train) == 10 and train.targets.tolist() == train_labels
    test = data.load(f"cifar10={tmp_path}", split="test")
    assert test.targets.tolist() == [9, 0, 4] and test.classnames == names
    # CIFAR rows are planes: R (1024) then G then B, row-major 32x32
    img = np.asarray(test[1].image)
    row = test_data[1]
    assert img[0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert img[2, 5].tolist() == [row[2 * 32 + 5], row[1024 + 2 * 32 + 5], row[2048 + 2 * 32 + 5]]
    assert test[0].captions[0] == "a photo of a truck."


def test_cifar100_fine_labels_and_names_as_clip_benchmark(tmp_path):
    d = tmp_path / "cifar-100-python"
    names = [f"class_{i}" for i in range(99)] + ["aquarium_fish"]
    dump(d / "meta", {"fine_label_names": names, "coarse_label_names": ["x"] * 20})
    dump(d / "train", {"data": cifar_rows([1, 2], 0), "fine_labels": [99, 3], "coarse_labels": [0, 1]})
    dump(d / "test", {"data": cifar_rows([1], 1), "fine_labels": [5], "coarse_labels": [0]})
    ds = data.load(f"cifar100={tmp_path / 'cifar-100-python'}", split="train")
    assert ds.targets.tolist() == [99, 3]
    assert ds.classnames[99] == "aquarium_fish"  # CLIP_benchmark keeps torchvision's names


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.target),))


def test_cifar_pickle_that_runs_code_is_refused_not_run(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    dump(d / "batches.meta", {"label_names": ["a"] * 10})
    dump(d / "test_batch", {"data": Evil(tmp_path / "pwned"), "labels": [0]})
    with pytest.raises(UserError, match=r"refused to load posix\.mkdir|refused to load os\.mkdir|refused to load nt\.mkdir"):
        data.load(f"cifar10={tmp_path}", split="test")
    assert not (tmp_path / "pwned").exists()


def test_imagenet1k_class_folders_use_clip_benchmark_names(tmp_path):
    from vlkit.data.catalog import read_classes

    names = read_classes("clip_benchmark")["imagenet1k_classnames"]
    wnids = [f"n{i:08d}" for i in range(1000)]
    for s in ("train", "val"):
        for w in wnids:
            (tmp_path / s / w).mkdir(parents=True)
    write_image(tmp_path / "val" / wnids[0] / "a.JPEG", color(0, 0))
    write_image(tmp_path / "val" / wnids[999] / "b.JPEG", color(1, 0))
    ds = data.load(f"imagenet1k={tmp_path}", split="test")
    assert ds.targets.tolist() == [0, 999]
    assert ds.classnames[0] == names[0] == "tench" and ds.classnames[999] == names[999]
    assert len(ds.templates) == 80  # CLIP's 80 ImageNet prompts
    (tmp_path / "val" / wnids[5]).rmdir()
    with pytest.raises(UserError, match="999 class folders, not ImageNet's 1000"):
        data.load(f"imagenet1k={tmp_path}", split="val")


def coco_doc(images, caps):
    return {"images": [{"id": i, "file_name": f} for i, f in images],
            "annotations": [{"id": n, "image_id": i, "caption": c} for n, (i, c) in enumerate(caps)]}


def test_mscoco_captions_both_layouts(tmp_path):
    images = [(42, "COCO_val2014_000000000042.jpg"), (7, "COCO_val2014_000000000007.jpg")]
    caps = [(42, "a dog on a couch"), (7, "two cats"), (42, "a brown dog"), (7, "cats sleeping")]
    for k, (i, f) in enumerate(images):
        write_image(tmp_path / "val2014" / f, color(k, 0))
    (tmp_path / "coco_test_karpathy.json").write_text(json.dumps(coco_doc(images, caps)))
    ds = data.load(f"mscoco_captions={tmp_path}", split="test")
    assert [ds.captions_at(i) for i in range(2)] == [["two cats", "cats sleeping"], ["a dog on a couch", "a brown dog"]]
    assert pixel(ds, 0) == color(1, 0)  # sorted by image id, as torchvision's CocoCaptions
    assert ds.view is None and ds.classnames is None
    # COCO's own layout: annotations/captions_val2017.json + val2017/
    official = tmp_path / "official"
    write_image(official / "val2017" / "000000000001.jpg", color(2, 0))
    (official / "annotations").mkdir()
    (official / "annotations" / "captions_val2017.json").write_text(
        json.dumps(coco_doc([(1, "000000000001.jpg")], [(1, "a red bus")])))
    ds = data.load(f"mscoco_captions={official}", split="val")
    assert len(ds) == 1 and ds.captions_at(0) == ["a red bus"] and pixel(ds, 0) == color(2, 0)
    with pytest.raises(UserError, match="annotations/captions_train2017.json"):
        data.load(f"mscoco_captions={official}", split="train")


def test_flickr30k_clip_benchmark_txt_and_karpathy_json(tmp_path):
    root = tmp_path / "flickr30k"
    for k, f in enumerate(["100.jpg", "200.jpg"]):
        write_image(root / f, color(k, 0))
    (root / "flickr30k_test_karpathy.txt").write_text(
        "image,caption\n100.jpg,A man, in a hat, waves.\n200.jpg,Kids play.\n100.jpg,A man waves.\n")
    ds = data.load(f"flickr30k={tmp_path}", split="test")
    assert [ds.captions_at(i) for i in range(2)] == [["A man, in a hat, waves.", "A man waves."], ["Kids play."]]
    assert pixel(ds, 1) == color(1, 0)
    k = tmp_path / "k"
    write_image(k / "flickr30k-images" / "1.jpg", color(0, 1))
    write_image(k / "flickr30k-images" / "2.jpg", color(1, 1))
    doc = {"dataset": "flickr30k", "images": [
        {"filename": "1.jpg", "split": "train", "sentences": [{"raw": "a"}, {"raw": "b"}]},
        {"filename": "2.jpg", "split": "test", "sentences": [{"raw": "c"}]}]}
    (k / "dataset_flickr30k.json").write_text(json.dumps(doc))
    test = data.load(f"flickr30k={k}", split="test")
    assert len(test) == 1 and test.captions_at(0) == ["c"] and pixel(test, 0) == color(1, 1)
    train = data.load(f"flickr30k={k}", split="train")
    assert train.captions_at(0) == ["a", "b"]
    with pytest.raises(UserError, match="flickr8k not found .*flickr8k_test_karpathy.txt"):
        data.load(f"flickr8k={k}", split="test")


def wds_shard(path, samples):
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data_ in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data_)
            tar.addfile(info, io.BytesIO(data_))


def png_bytes(rgb) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), rgb).save(buf, "PNG")
    return buf.getvalue()


def test_clip_benchmark_wds_classification_and_retrieval(tmp_path):
    cls = tmp_path / "wds_cifar10"
    (cls / "test").mkdir(parents=True)
    (cls / "test" / "nshards.txt").write_text("2\n")
    (cls / "classnames.txt").write_text("airplane\nautomobile\nbird\n")
    (cls / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na blurry photo of a {c}.\n")
    wds_shard(cls / "test" / "0.tar", [("s0.webp", png_bytes(color(2, 0))), ("s0.cls", b"2"),
                                       ("s1.webp", png_bytes(color(0, 1))), ("s1.cls", b"0")])
    wds_shard(cls / "test" / "1.tar", [("s2.webp", png_bytes(color(1, 2))), ("s2.cls", b"1")])
    ds = data.load(f"wds={cls}", split="test")
    assert ds.targets.tolist() == [2, 0, 1] and ds.classnames == ["airplane", "automobile", "bird"]
    assert ds[0].captions == ["a photo of a bird.", "a blurry photo of a bird."]
    assert [pixel(ds, i) for i in range(3)] == [color(2, 0), color(0, 1), color(1, 2)]
    (cls / "test" / "nshards.txt").write_text("3\n")
    with pytest.raises(UserError, match="wds shard not found: .*2.tar"):
        data.load(f"wds={cls}", split="test")
    ret = tmp_path / "wds_flickr30k"
    (ret / "test").mkdir(parents=True)
    (ret / "test" / "nshards.txt").write_text("1")
    (ret / "dataset_type.txt").write_text("retrieval\n")
    wds_shard(ret / "test" / "0.tar", [("a.jpg", png_bytes(color(0, 0))), ("a.txt", b"a dog\na brown dog\n")])
    ds = data.load(f"wds={ret}", split="test")
    assert ds.view is None and ds.captions_at(0) == ["a dog", "a brown dog"]
    with pytest.raises(UserError, match=r"wds not found: .*train/nshards.txt is missing"):
        data.load(f"wds={ret}", split="train")


def test_coop_domain_shift_targets(tmp_path):
    """ImageNetV2's folders are label numbers; Sketch/A/R are WNID folders (A and R: 200 of them)."""
    names = "n01 tench\nn02 goldfish\nn03 great_white_shark\n"
    v2 = tmp_path / "imagenetv2"
    for label in (2, 0):
        write_image(v2 / "imagenetv2-matched-frequency-format-val" / str(label) / "a.jpeg", color(label, 0))
    (v2 / "classnames.txt").write_text(names)
    ds = data.load(f"imagenetv2={tmp_path}", split="test")
    assert ds.targets.tolist() == [0, 2] and ds.classnames == ["tench", "goldfish", "great white shark"]
    assert [pixel(ds, 0), pixel(ds, 1)] == [color(0, 0), color(2, 0)]
    a = tmp_path / "imagenet-adversarial"
    for w, label in (("n03", 1), ("n01", 0)):  # a subset of ImageNet's classes, labels in folder order
        write_image(a / "imagenet-a" / w / "x.jpg", color(label, 0))
    (a / "imagenet-a" / "README.txt").write_text("not a class")
    (a / "classnames.txt").write_text(names)
    ds = data.load(f"imagenet_a={tmp_path}", split="test")
    assert ds.classnames == ["tench", "great white shark"] and ds.targets.tolist() == [0, 1]
    assert pixel(ds, 1) == color(1, 0)
    with pytest.raises(UserError, match="no split 'train'"):
        data.load(f"imagenet_r={tmp_path}", split="train")
    with pytest.raises(UserError, match=r"imagenet-sketch/classnames.txt is missing"):
        data.load(f"imagenet_sketch={tmp_path}", split="test")


@pytest.mark.parametrize("name", [n for n in data.DATASETS.names() if data.describe(n)["needs_path"]])
def test_every_dataset_read_from_disk_names_a_missing_folder_in_one_line(tmp_path, name):
    split = data.describe(name)["splits"][-1]
    with pytest.raises(UserError) as e:
        data.load(f"{name}={tmp_path / 'nothing-here'}", split=split)
    assert "\n" not in str(e.value) and "nothing-here" in str(e.value)
