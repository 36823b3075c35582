"""Fuzz: user-format records of random types and bytes (captions CSV rows, JSONL objects, tar
members .txt/.json/.cls/.png, truncated shards) either load into a well-formed dataset or raise
UserError with a one-line message; never another exception. Warnings are one line too."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")  # the dev extra installs it
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from vlkit import data  # noqa: E402
from vlkit.errors import UserError  # noqa: E402

# derandomized: the same examples on every run, so CI never turns red by chance
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=5)
IMAGE = st.sampled_from(["img/0.png", "img/1.png", "img/bad.png", "img/missing.png", "../outside.png",
                         "/etc/hostname", "img/../img/0.png", "", "img\x00.png"]) | JSON
CAPTION = st.text(max_size=10) | st.lists(st.text(max_size=6), max_size=3) | JSON
LABEL = st.sampled_from(["cat", "dog", "3", "-1", "", " 7 "]) | st.integers(-3, 2**70) | JSON
RECORD = st.fixed_dictionaries({}, optional={"image": IMAGE, "caption": CAPTION, "captions": CAPTION,
                                              "label": LABEL, "classname": JSON})
# records that are right but for a detail, so that a fair share of the examples loads
WORDS = st.text(alphabet="abc xyz-é", min_size=1, max_size=8)
GOOD_IMAGE = st.sampled_from(["img/0.png", "img/1.png", "./img/0.png"])
GOOD_RECORD = st.fixed_dictionaries({"image": GOOD_IMAGE, "caption": WORDS | st.lists(WORDS, min_size=1, max_size=2)},
                                    optional={"label": st.sampled_from(["cat", "dog", 0, 1, "2"]) | LABEL})
_names = itertools.count()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory):
    """root/set/img/{0,1}.png (real), root/set/img/bad.png (garbage), root/outside.png."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "set" / "img").mkdir(parents=True)
    for i in (0, 1):
        (root / "set" / "img" / f"{i}.png").write_bytes(_png(i))
    (root / "set" / "img" / "bad.png").write_bytes(b"\x89PNG garbage")
    (root / "outside.png").write_bytes(_png(2))
    return root


def _loads_or_one_line(fmt: str, path, **options):
    """Load (and read every sample of) a user dataset: a well-formed dataset, or None after a
    one-line UserError; any other exception fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = data.load(fmt, path=str(path), split="all", **options)
            samples = [ds[i] for i in range(len(ds))]  # decodes the images
        except UserError as e:
            assert str(e) and "\n" not in str(e), repr(str(e))
            ds = None
    for w in caught:
        assert "\n" not in str(w.message), repr(str(w.message))
    if ds is not None:
        assert len(ds) > 0
        for s in samples:
            assert s.captions and all(isinstance(c, str) and c.strip() for c in s.captions)
            assert isinstance(s.label, int) and s.label >= -1
            assert s.image.mode == "RGB"
        names = ds.classnames
        assert names is None or all(isinstance(n, str) for n in names)
    return ds


def _jsonl_line(record) -> str:
    return json.dumps(record)


@FUZZ
@given(lines=st.lists(GOOD_RECORD.map(_jsonl_line), min_size=1, max_size=3)
       | st.lists(GOOD_RECORD.map(_jsonl_line) | RECORD.map(_jsonl_line) | st.text(max_size=15), min_size=1, max_size=4),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "bytes"]), noise=st.binary(max_size=30))
def test_jsonl_records(fuzz_root, lines, encoding, noise):
    text = "\n".join(lines) + "\n"
    raw = noise if encoding == "bytes" else text.encode(encoding, errors="replace")
    path = fuzz_root / "set" / f"f{next(_names)}.jsonl"
    path.write_bytes(raw)
    _loads_or_one_line("captions", path)


CELL = st.text(max_size=10) | st.sampled_from(["img/0.png", "img/1.png", "../outside.png", "cat", "3", ""])
GOOD_ROW = st.tuples(GOOD_IMAGE, WORDS, st.sampled_from(["cat", "dog", "1"])).map(list)


@FUZZ
@given(header=st.sampled_from(["filepath\ttitle\tlabel", "filepath,title,label", "filepath\ttitle", "image,caption",
                               "a,b", "", "filepath\ttitle\tlabel\textra"]),
       rows=st.lists(GOOD_ROW, min_size=1, max_size=3)
       | st.lists(GOOD_ROW | st.lists(CELL, min_size=0, max_size=4), min_size=0, max_size=4),
       sep=st.sampled_from(["\t", ","]),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "bytes"]),
       noise=st.binary(max_size=30), allow_outside=st.booleans())
def test_captions_csv_rows(fuzz_root, header, rows, sep, encoding, noise, allow_outside):
    text = header + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    raw = noise if encoding == "bytes" else text.encode(encoding, errors="replace")
    path = fuzz_root / "set" / f"f{next(_names)}.csv"
    path.write_bytes(raw)
    _loads_or_one_line("captions", path, allow_outside=allow_outside)


MEMBER = st.fixed_dictionaries({}, optional={
    "png": st.sampled_from(["real", "real", "real", "garbage", "cut"]),
    "txt": WORDS.map(str.encode) | st.binary(max_size=12) | st.text(max_size=10).map(str.encode),
    "json": st.binary(max_size=12) | JSON.map(json.dumps).map(str.encode) | RECORD.map(json.dumps).map(str.encode),
    "cls": st.binary(max_size=6) | st.integers(-5, 10**30).map(str).map(str.encode),
})


GOOD_MEMBER = st.fixed_dictionaries(
    {"png": st.just("real"), "txt": WORDS.map(str.encode)},
    optional={"json": (GOOD_RECORD | st.fixed_dictionaries({"captions": WORDS})).map(json.dumps).map(str.encode)
              | RECORD.map(json.dumps).map(str.encode),
              "cls": st.sampled_from([b"0", b"1", b" 2\n"]) | st.binary(max_size=4)})


def _json_record(members: dict):
    try:
        return json.loads(members["json"])
    except (KeyError, ValueError):
        return None


@FUZZ
@given(samples=st.lists(GOOD_MEMBER, min_size=1, max_size=3) | st.lists(GOOD_MEMBER | MEMBER, min_size=1, max_size=3),
       cut=st.none() | st.integers(0, 12_000),
       strict=st.booleans())
def test_webdataset_members(fuzz_root, samples, cut, strict):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for k, members in enumerate(samples):
            for ext, payload in members.items():
                if ext == "png":
                    payload = {"real": _png(k), "garbage": b"\x89PNG no", "cut": _png(k)[:30]}[payload]
                info = tarfile.TarInfo(f"s{k}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    raw = buf.getvalue()
    path = fuzz_root / f"w{next(_names)}.tar"
    path.write_bytes(raw if cut is None else raw[:cut])
    ds = _loads_or_one_line("webdataset", path, strict=strict)
    for i in range(len(ds) if ds is not None else 0):  # a captions string is one caption
        record = _json_record(samples[int(ds.meta_at(i)["key"][1:])])
        if isinstance(record, dict) and isinstance(record.get("captions"), str) and record["captions"].strip():
            assert ds.captions_at(i) == [record["captions"].strip()]


def test_the_fuzz_reaches_both_outcomes(fuzz_root):
    """The fuzz is only worth something if its inputs both load and fail."""
    path = fuzz_root / "set" / "ok.jsonl"
    path.write_text('{"image": "img/0.png", "captions": "a red thing", "label": "cat"}\n')
    assert len(_loads_or_one_line("captions", path)) == 1
    path.write_text('{"image": "img/0.png", "captions": "a red thing", "label": {"x": 1}}\n')
    assert _loads_or_one_line("captions", path) is None
