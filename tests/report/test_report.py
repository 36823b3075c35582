"""report.html: self-contained, complete, with a plot per artifact and the OpenMoji credit."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import vlkit.data
import vlkit.models
from vlkit import report
from vlkit.data.dataset import ArrayImages, VLDataset
from vlkit.errors import UserError
from vlkit.evaluate import run
from vlkit.report.examples import OTHER, OWN, SAME_CAPTION, mark_of

CREDIT = "Emoji images: OpenMoji (openmoji.org), CC BY-SA 4.0"


class Page(HTMLParser):
    """Collects what the tests look at: tags, image sources, figure ids, metric rows."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.img_src: list[str] = []
        self.figures: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self._row: str | None = None
        self._cells: list[str] = []
        self._text = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.img_src.append(attrs.get("src") or "")
        if tag == "figure":
            self.figures.append(attrs.get("id"))
        if tag == "tr" and attrs.get("data-metric"):
            self._row, self._cells = attrs["data-metric"], []
        if tag == "td":
            self._text = ""

    def handle_data(self, data):
        self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._row:
            self._cells.append(self._text.strip())
        if tag == "tr" and self._row:
            self.rows[self._row], self._row = self._cells, None


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
    image.load()
    return image


def test_report_is_self_contained(digits_run):
    out, _ = digits_run
    text = (out / "report.html").read_text()
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert 'src="http' not in text and "url(" not in text and "@import" not in text
    assert page.img_src and all(src.startswith("data:image/png;base64,") for src in page.img_src)
    for src in page.img_src:
        image = decode_png(src)
        assert image.format == "PNG" and 100 < image.width <= 1000  # 80 dpi: no print-size plots
        assert len(src) < 200_000


def test_report_shows_every_metric_with_its_chance_level(digits_run, same_number):
    out, _ = digits_run
    saved = json.loads((out / "metrics.json").read_text())
    page = Page((out / "report.html").read_text())
    assert set(page.rows) == set(saved["metrics"])
    for key, (name, value, chance) in page.rows.items():
        assert key.endswith("/" + name)
        expected = saved["metrics"][key]
        assert same_number(value, expected), (key, value, expected)
        recorded = saved["chance"].get(key)
        assert (chance == "" and recorded is None) or same_number(chance, recorded), (key, chance, recorded)


def test_a_plot_for_each_artifact_and_a_header_with_the_run(digits_run):
    out, _ = digits_run
    text = (out / "report.html").read_text()
    page = Page(text)
    assert set(page.figures) == {"plot-zeroshot-per-class", "plot-zeroshot-confusion", "plot-retrieval-examples",
                                 "plot-calibration-reliability", "plot-conformal-curves"}
    saved = json.loads((out / "metrics.json").read_text())
    assert "<details><summary>Configuration</summary>" in text
    for fact in ("preset:tiny-clip", "digits", saved["model"]["fingerprint"], f"torch {saved['versions']['torch']}"):
        assert fact in text
    assert CREDIT not in text  # digits are not OpenMoji
    assert "Training curves" not in text  # no metrics.jsonl: nothing trained


def copy_run(src, dst, suites=()):
    """The run's metrics.json, and artifacts.json cut to ``suites`` (fewer plots: a faster test)."""
    dst.mkdir()
    shutil.copy(src / "metrics.json", dst / "metrics.json")
    artifacts = json.loads((src / "artifacts.json").read_text())
    (dst / "artifacts.json").write_text(json.dumps({k: v for k, v in artifacts.items() if k in suites}))
    return dst


def test_training_curves_come_from_metrics_jsonl(digits_run, tmp_path):
    run_dir = copy_run(digits_run[0], tmp_path / "trained")
    rows = [{"step": s, "epoch": 0, "lr": 1e-3 * s / 30, "loss": 3.0 - s / 20, "clip_loss": 2.0 - s / 30,
             "samples_per_s": 100.0} for s in range(1, 31)]
    rows[4]["loss"] = "nan"  # the engine writes non-finite values as strings
    lines = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 31, "lo'  # cut short by a kill
    (run_dir / "metrics.jsonl").write_text(lines)
    text = report.write(run_dir).read_text()
    assert Page(text).figures == ["plot-training"]
    assert "30 logged steps, last step 30" in text


def test_examples_without_the_evaluated_dataset_are_listed_not_drawn(digits_run, tmp_path):
    run_dir = copy_run(digits_run[0], tmp_path / "other-data", suites=("retrieval",))
    smaller = vlkit.data.load("digits", "test").subset(range(50))  # not what was evaluated
    text = report.write(run_dir, dataset={"test": smaller}).read_text()
    assert "plot-retrieval-examples" not in Page(text).figures
    assert "not the evaluated one" in text and "<td>a handwritten digit" in text


def fake_openmoji(n: int = 12) -> VLDataset:
    """A few flat-colour images under the name ``openmoji`` (the real build takes seconds): the
    credit depends on the data's name, which is what this stands in for."""
    rng = np.random.default_rng(0)
    images = np.repeat(rng.integers(0, 256, size=(n, 1, 1, 3), dtype=np.uint8), 32, axis=1).repeat(32, axis=2)
    captions = [[f"emoji number {i}", f"a drawing of emoji {i}"] for i in range(n)]
    return VLDataset("openmoji", "test", ArrayImages(images), captions, {}, [{} for _ in range(n)], {}, None,
                     "fake-openmoji")


def test_openmoji_images_carry_the_credit(tmp_path):
    model = vlkit.models.load("preset:tiny-clip")
    moji = fake_openmoji()
    run(model, {"test": moji}, ["retrieval"], out_dir=tmp_path, options={"retrieval": {"n_examples": 2}})
    text = report.write(tmp_path, dataset={"test": moji}).read_text()
    assert Page(text).figures == ["plot-retrieval-examples"]
    footer = text[text.index("<footer>"):]
    figure = text[text.index('<figure id="plot-retrieval-examples">'):text.index("</figure>")]
    assert CREDIT in footer and CREDIT in figure


def test_the_query_own_image_and_same_caption_images_are_marked():
    class Captions:
        def captions_at(self, i):
            return [["a cat"], ["a dog"], ["a cat"]][i]

    example = {"query": "a cat", "positive_image": 0, "top_images": [2, 0, 1]}
    assert [mark_of(i, example, Captions()) for i in example["top_images"]] == [SAME_CAPTION, OWN, OTHER]


def test_a_directory_without_metrics_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="no metrics.json in .*evaluate first") as info:
        report.write(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="run directory not found"):
        report.write(tmp_path / "missing")
