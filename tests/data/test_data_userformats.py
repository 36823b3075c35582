"""User formats: imagefolder, captions (CSV/TSV/JSONL), webdataset; the bad-input policy."""

from __future__ import annotations

import io
import json
import tarfile
import warnings

import numpy as np
import pytest

from vlkit import data
from vlkit.errors import UserError


def _load_quiet(*args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.load(*args, **kw)
    return ds, [str(w.message) for w in caught]


def test_imagefolder_classes_captions_and_sidecars(image_folder):
    ds, _ = _load_quiet(f"imagefolder={image_folder}", split="all")
    assert len(ds) == 5 and ds.classnames == ["cats", "hot dogs"] and ds.view == "class"
    assert list(ds.targets) == [0, 0, 0, 1, 1]
    assert ds[0].captions[0] == "a photo of a cats."  # templates filled with the class name
    assert ds[3].captions == ["a dog in the sun", "a sleepy dog"]  # sidecar d0.txt
    assert ds[0].image.mode == "RGB"


def test_imagefolder_split_folders(tmp_path, write_png):
    for split in ("train", "test"):
        write_png(tmp_path / split / "a" / "x.png", 1)
        write_png(tmp_path / split / "b" / "y.png", 2)
    ds = data.load("imagefolder", path=str(tmp_path), split="test")
    assert len(ds) == 2 and "test" in ds.meta_at(0)["path"]
    with pytest.raises(UserError, match="no 'val' folder.*train, test"):
        data.load("imagefolder", path=str(tmp_path), split="val")


def test_folder_without_splits_warns_that_every_split_gets_everything(image_folder):
    _, messages = _load_quiet(f"imagefolder={image_folder}", split="test")
    assert any("no train/val/test separation" in m for m in messages)


def test_corrupt_image_is_skipped_and_counted_once(image_folder):
    (image_folder / "cats" / "broken.png").write_bytes(b"\x89PNG not really an image")
    (image_folder / "cats" / "broken2.jpg").write_bytes(b"")
    ds, messages = _load_quiet(f"imagefolder={image_folder}", split="all")
    assert len(ds) == 5 and len(ds.info["skipped"]) == 2
    skip_lines = [m for m in messages if "unreadable" in m]
    assert len(skip_lines) == 1 and "skipped 2" in skip_lines[0] and "broken" in skip_lines[0]


def test_corrupt_image_raises_under_strict(image_folder):
    bad = image_folder / "cats" / "broken.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="broken.png"):
        data.load(f"imagefolder={image_folder}", split="all", strict=True)


def test_missing_paths_are_named(tmp_path):
    missing = tmp_path / "nowhere"
    for spec in (f"imagefolder={missing}", f"captions={missing}.csv", f"webdataset={missing}.tar"):
        with pytest.raises(UserError, match="nowhere"):
            data.load(spec, split="all")


def _images(tmp_path, write_png, n=3):
    return {f"img/{i}.png": write_png(tmp_path / "img" / f"{i}.png", i) for i in range(n)}


def test_captions_tsv_groups_rows_by_image(tmp_path, write_png):
    pix = _images(tmp_path, write_png)
    (tmp_path / "train.csv").write_text(
        "filepath\ttitle\nimg/0.png\ta red thing\nimg/1.png\ta blue thing\nimg/0.png\tsomething red\n")
    ds = data.load("captions", path=str(tmp_path / "{split}.csv"), split="train")
    assert len(ds) == 2 and ds[0].captions == ["a red thing", "something red"]
    assert np.array_equal(np.asarray(ds[1].image), pix["img/1.png"]) and ds.view is None and ds[0].label == -1


def test_captions_comma_csv_and_jsonl_with_labels(tmp_path, write_png):
    _images(tmp_path, write_png)
    (tmp_path / "a.csv").write_text("filepath,title,label\nimg/0.png,\"a cat, sitting\",cat\nimg/2.png,a dog,dog\n")
    ds, _ = _load_quiet("captions", path=str(tmp_path / "a.csv"), split="all")
    assert ds[0].captions == ["a cat, sitting"] and ds.classnames == ["cat", "dog"] and list(ds.targets) == [0, 1]
    lines = [{"image": "img/1.png", "captions": ["one", "two"]}, {"image": "img/2.png", "caption": "three"}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds, _ = _load_quiet("captions", path=str(tmp_path / "b.jsonl"), split="all")
    assert [s.captions for s in (ds[0], ds[1])] == [["one", "two"], ["three"]]


@pytest.mark.parametrize("name, text, line", [
    ("a.csv", "filepath\ttitle\nimg/0.png\tfine\nimg/1.png\t   \n", 3),
    ("b.jsonl", '{"image": "img/0.png", "caption": "ok"}\n{"image": "img/1.png", "caption": ""}\n', 2),
])
def test_empty_caption_is_refused_with_file_and_line(tmp_path, write_png, name, text, line):
    _images(tmp_path, write_png)
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=rf"empty caption at .*{name} line {line}"):
        _load_quiet("captions", path=str(tmp_path / name), split="all")


def test_empty_sidecar_caption_is_refused(image_folder):
    (image_folder / "cats" / "c1.txt").write_text("\n  \n")
    with pytest.raises(UserError, match=r"empty caption at .*c1.txt line 1"):
        _load_quiet(f"imagefolder={image_folder}", split="all")


def _shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, payload in samples:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_webdataset_brace_pattern_glob_and_bad_members(tmp_path, write_png):
    pngs = [write_png(tmp_path / f"{i}.png", i) for i in range(4)]
    raw = [(tmp_path / f"{i}.png").read_bytes() for i in range(4)]
    _shard(tmp_path / "s-000.tar", [("a.png", raw[0]), ("a.txt", b"first"), ("b.png", raw[1]),
                                     ("b.json", json.dumps({"captions": ["x", "y"]}).encode())])
    _shard(tmp_path / "s-001.tar", [("c.jpg", b"not a jpeg"), ("c.txt", b"broken"),
                                     ("d.png", raw[3]), ("d.txt", b"last")])
    for pattern in ("s-{000..001}.tar", "s-*.tar"):
        ds, messages = _load_quiet("webdataset", path=str(tmp_path / pattern), split="all")
        assert [ds[i].captions for i in range(len(ds))] == [["first"], ["x", "y"], ["last"]]
        assert np.array_equal(np.asarray(ds[2].image), pngs[3])
        assert ds.info["skipped"] and any("skipped 1" in m for m in messages)
    with pytest.raises(UserError, match=r"c\.jpg"):
        data.load("webdataset", path=str(tmp_path / "s-001.tar"), split="all", strict=True)
    _shard(tmp_path / "e.tar", [("e.png", raw[0]), ("e.txt", b"  ")])
    with pytest.raises(UserError, match=r"empty caption at .*e.tar:e.txt line 1"):
        _load_quiet("webdataset", path=str(tmp_path / "e.tar"), split="all")


def test_user_datasets_pickle_for_dataloader_workers(image_folder, tmp_path, write_png):
    import pickle

    ds, _ = _load_quiet(f"imagefolder={image_folder}", split="all")
    raw = write_png(tmp_path / "w.png", 3)
    _shard(tmp_path / "w.tar", [("w.png", (tmp_path / "w.png").read_bytes()), ("w.txt", b"one")])
    wds, _ = _load_quiet("webdataset", path=str(tmp_path / "w.tar"), split="all")
    for d in (ds, wds):
        back = pickle.loads(pickle.dumps(d))
        assert np.array_equal(np.asarray(back[0].image), np.asarray(d[0].image))
    assert np.array_equal(np.asarray(wds[0].image), raw)


# -- misread records are refused or read as meant; truncated shards are said; paths stay inside --


def _raises_one_line(match, fn, *args, **kw):
    """The UserError of ``fn(*args, **kw)``: one line, matching ``match``."""
    with pytest.raises(UserError, match=match) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **kw)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def _png_bytes(tmp_path, write_png, i=0):
    write_png(tmp_path / f"p{i}.png", i)
    return (tmp_path / f"p{i}.png").read_bytes()


def test_webdataset_captions_string_is_one_caption_not_one_per_letter(tmp_path, write_png):
    raw = _png_bytes(tmp_path, write_png)
    _shard(tmp_path / "s.tar", [("a.png", raw), ("a.json", json.dumps({"captions": "a red circle"}).encode()),
                                 ("b.png", raw), ("b.json", json.dumps({"caption": ["one", "two"]}).encode())])
    ds, _ = _load_quiet("webdataset", path=str(tmp_path / "s.tar"), split="all")
    assert ds[0].captions == ["a red circle"] and ds[1].captions == ["one", "two"]


@pytest.mark.parametrize("record, kind", [
    ({"captions": 7}, "a number"),
    ({"captions": ["fine", 3]}, "a list holding a number"),
    ({"caption": {"text": "x"}}, "an object"),
])
def test_webdataset_caption_of_another_type_is_one_line_naming_shard_and_key(tmp_path, write_png, record, kind):
    raw = _png_bytes(tmp_path, write_png)
    _shard(tmp_path / "s.tar", [("k7.png", raw), ("k7.json", json.dumps(record).encode())])
    msg = _raises_one_line(r"s\.tar:k7\.json", data.load, "webdataset", path=str(tmp_path / "s.tar"), split="all")
    assert kind in msg and "string or a list of caption strings" in msg


def _tar_bytes(samples):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in samples:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_truncated_shard_warns_with_the_samples_read_and_strict_raises(tmp_path, write_png):
    members = []
    for i in range(4):
        members += [(f"{i:03d}.png", _png_bytes(tmp_path, write_png, i)), (f"{i:03d}.txt", b"caption %d" % i)]
    raw = _tar_bytes(members)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        third = next(m for m in tar.getmembers() if m.name == "002.png")
    shard = tmp_path / "cut.tar"
    shard.write_bytes(raw[: third.offset_data + 10])  # the copy stopped inside the third image
    ds, messages = _load_quiet("webdataset", path=str(shard), split="all")
    assert len(ds) == 2 and [ds[i].captions for i in range(2)] == [["caption 0"], ["caption 1"]]
    lines = [m for m in messages if "truncated" in m]
    assert len(lines) == 1 and str(shard) in lines[0] and "read 2 samples" in lines[0] and "\n" not in lines[0]
    shard.write_bytes(raw[: third.offset])  # cut exactly between samples: tar itself says nothing
    ds, messages = _load_quiet("webdataset", path=str(shard), split="all")
    assert len(ds) == 1 and any("truncated" in m and "read 1 sample " in m for m in messages)
    _raises_one_line(r"cut\.tar is truncated.*strict", data.load, "webdataset", path=str(shard), split="all",
                     strict=True)
    shard.write_bytes(raw)  # the whole shard: no warning
    ds, messages = _load_quiet("webdataset", path=str(shard), split="all")
    assert len(ds) == 4 and not any("truncated" in m for m in messages)


@pytest.mark.parametrize("record", [{"label": {"name": "cat"}}, {"label": ["cat"]}, {"label": True},
                                    {"label": 2.5}, {"label": -1}])
def test_webdataset_label_that_is_no_class_is_refused(tmp_path, write_png, record):
    raw = _png_bytes(tmp_path, write_png)
    _shard(tmp_path / "s.tar", [("k.png", raw), ("k.json", json.dumps({"caption": "x", **record}).encode())])
    _raises_one_line(r"label at .*s\.tar:k\.json", data.load, "webdataset", path=str(tmp_path / "s.tar"), split="all")


@pytest.mark.parametrize("cls", [b"cat", b"3.5", b"\xff\xfe", b""])
def test_webdataset_non_integer_cls_is_one_line(tmp_path, write_png, cls):
    raw = _png_bytes(tmp_path, write_png)
    _shard(tmp_path / "s.tar", [("k.png", raw), ("k.txt", b"x"), ("k.cls", cls)])
    _raises_one_line(r"s\.tar:k\.cls .*not a class index", data.load, "webdataset",
                     path=str(tmp_path / "s.tar"), split="all")


def test_webdataset_integer_cls_and_classname_still_make_classes(tmp_path, write_png):
    raw = _png_bytes(tmp_path, write_png)
    _shard(tmp_path / "s.tar", [("a.png", raw), ("a.txt", b"x"), ("a.cls", b" 1\n"),
                                 ("b.png", raw), ("b.json", b'{"caption": "y", "label": 0, "classname": "cat"}')])
    ds, _ = _load_quiet("webdataset", path=str(tmp_path / "s.tar"), split="all")
    assert list(ds.targets) == [1, 0] and ds.classnames == ["cat", "1"]


@pytest.mark.parametrize("label", [{"name": "cat"}, ["cat"], False])
def test_jsonl_label_that_is_no_class_is_refused_with_line(tmp_path, write_png, label):
    _images(tmp_path, write_png)
    lines = [{"image": "img/0.png", "caption": "a", "label": "cat"}, {"image": "img/1.png", "caption": "b", "label": label}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    _raises_one_line(r"label at .*a\.jsonl line 2", data.load, "captions", path=str(tmp_path / "a.jsonl"), split="all")


@pytest.mark.parametrize("image", [7, ["img/0.png"], {"path": "img/0.png"}, True])
def test_jsonl_image_that_is_not_a_path_string_is_one_line(tmp_path, write_png, image):
    _images(tmp_path, write_png)
    (tmp_path / "a.jsonl").write_text(json.dumps({"image": "img/1.png", "caption": "a"}) + "\n"
                                      + json.dumps({"image": image, "caption": "b"}) + "\n")
    _raises_one_line(r"image path at .*a\.jsonl line 2 is .*path string", data.load, "captions",
                     path=str(tmp_path / "a.jsonl"), split="all")


@pytest.mark.parametrize("line", ["[1, 2]", "5", '"img/0.png"', "null"])
def test_jsonl_line_that_is_not_an_object_is_one_line(tmp_path, write_png, line):
    _images(tmp_path, write_png)
    (tmp_path / "a.jsonl").write_text(line + "\n")
    _raises_one_line(r"a\.jsonl line 1 is .*not a JSON object", data.load, "captions",
                     path=str(tmp_path / "a.jsonl"), split="all")


def test_jsonl_caption_string_list_and_other_types(tmp_path, write_png):
    _images(tmp_path, write_png)
    (tmp_path / "a.jsonl").write_text('{"image": "img/0.png", "captions": "just one"}\n')
    ds, _ = _load_quiet("captions", path=str(tmp_path / "a.jsonl"), split="all")
    assert ds[0].captions == ["just one"]
    (tmp_path / "b.jsonl").write_text('{"image": "img/0.png", "caption": {"en": "x"}}\n')
    _raises_one_line(r"'caption' at .*b\.jsonl line 1 is an object", data.load, "captions",
                     path=str(tmp_path / "b.jsonl"), split="all")


def test_non_utf8_captions_file_is_one_line_with_line_number(tmp_path, write_png):
    _images(tmp_path, write_png)
    (tmp_path / "a.csv").write_bytes("filepath\ttitle\nimg/0.png\tok\nimg/1.png\tcaf\xe9\n".encode("latin-1"))
    _raises_one_line(r"a\.csv is not UTF-8 text \(line 3.*save it as UTF-8", data.load, "captions",
                     path=str(tmp_path / "a.csv"), split="all")
    (tmp_path / "b.jsonl").write_bytes(b'{"image": "img/0.png", "caption": "\xff"}\n')
    _raises_one_line(r"b\.jsonl is not UTF-8", data.load, "captions", path=str(tmp_path / "b.jsonl"), split="all")
    (tmp_path / "c.csv").write_bytes("\ufefffilepath,title\nimg/0.png,caf\u00e9\n".encode("utf-8"))  # Excel's BOM
    ds, _ = _load_quiet("captions", path=str(tmp_path / "c.csv"), split="all")
    assert ds[0].captions == ["caf\u00e9"]


def test_non_utf8_sidecar_caption_is_one_line(image_folder):
    (image_folder / "cats" / "c1.txt").write_bytes(b"a cat \xe9\n")
    _raises_one_line(r"c1\.txt is not UTF-8", data.load, f"imagefolder={image_folder}", split="all")


@pytest.mark.parametrize("rel", ["../outside.png", "img/../../outside.png", "ABS"])
def test_captions_image_paths_are_confined_to_the_files_folder(tmp_path, write_png, rel):
    inner = tmp_path / "set"
    _images(inner, write_png)
    write_png(tmp_path / "outside.png", 9)  # exists, readable: only the path rule stops it
    rel = str(tmp_path / "outside.png") if rel == "ABS" else rel
    (inner / "a.csv").write_text(f"filepath\ttitle\nimg/0.png\tinside\n{rel}\toutside\n")
    msg = _raises_one_line(r"a\.csv line 3 points outside", data.load, "captions",
                           path=str(inner / "a.csv"), split="all")
    assert "allow_outside=true" in msg
    ds, _ = _load_quiet("captions", path=str(inner / "a.csv"), split="all", allow_outside=True)
    assert len(ds) == 2 and ds[1].captions == ["outside"]


def test_captions_paths_that_stay_inside_are_fine(tmp_path, write_png):
    _images(tmp_path, write_png)
    (tmp_path / "a.csv").write_text("filepath\ttitle\nimg/../img/0.png\tx\n./img/1.png\ty\n")
    ds, _ = _load_quiet("captions", path=str(tmp_path / "a.csv"), split="all")
    assert len(ds) == 2
