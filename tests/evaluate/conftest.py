"""Fakes for the evaluator tests: text encoders, scene metadata, a model and a dataset.

The fake model and dataset follow the contracts of docs/architecture.md by duck typing only,
so these tests do not depend on vlkit.models or vlkit.data.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))


def word_vector(token: str, dim: int) -> torch.Tensor:
    """A fixed random unit vector per token (seeded by a stable hash, not Python's hash())."""
    g = torch.Generator().manual_seed(zlib.crc32(token.encode()))
    return F.normalize(torch.randn(dim, generator=g, dtype=torch.float64), dim=0)


def bag_of_words(dim: int = 128):
    """Order-invariant text encoder: the sum of word vectors, words summed in sorted order so
    that two captions with the same words get bit-identical embeddings."""

    def encode(texts):
        rows = [sum(word_vector(w, dim) for w in sorted(t.lower().split())) for t in texts]
        return F.normalize(torch.stack(rows).float(), dim=-1)

    return encode


def ordered_words(dim: int = 4096):
    """Order-aware text encoder: one-hot of (position, word) pairs hashed into ``dim`` slots."""

    def encode(texts):
        out = torch.zeros(len(texts), dim)
        for i, t in enumerate(texts):
            for pos, w in enumerate(t.lower().split()):
                out[i, zlib.crc32(f"{pos}:{w}".encode()) % dim] += 1.0
        return F.normalize(out, dim=-1)

    return encode


def scene(objs, rel="left of") -> dict:
    """Shapes-style meta: objects as (color, shape, size) and one relation 0 -> 1."""
    objects = [{"color": c, "shape": s, "size": z, "cx": 10.0 + 20 * k, "cy": 30.0} for k, (c, s, z) in enumerate(objs)]
    return {"objects": objects, "relations": [[0, 1, rel]] if len(objs) > 1 else []}


@pytest.fixture
def scenes():
    """Eight two-object scenes with distinct colors and sizes, unique full captions."""
    colors = ["red", "blue", "green", "yellow"]
    shapes = ["circle", "square", "triangle", "star"]
    out = []
    for k in range(8):
        a, b = k % 4, (k + 1 + k // 4) % 4
        out.append(scene([(colors[a], shapes[k % 4], "small"), (colors[b], shapes[(k + 2) % 4], "large")],
                         rel="left of" if k % 2 else "above"))
    return out


# -- a fake dual encoder and dataset (duck typing, per docs/architecture.md) ----------------------

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 200, 30)}


class FakeDataset:
    """Solid-color 8x8 images; classes are colors; the meta names a square of that color left of a circle."""

    def __init__(self, split: str, n: int, seed: int = 0, view: str | None = "color", name: str = "colors"):
        rng = np.random.default_rng(seed)
        self.name, self.split, self.view = name, split, view
        self._y = rng.integers(0, len(COLORS), size=n)
        names = list(COLORS)
        self._images = []
        for y in self._y:
            pix = np.clip(np.array(COLORS[names[y]]) + rng.normal(0, 8, size=(8, 8, 3)), 0, 255)
            self._images.append(Image.fromarray(pix.astype(np.uint8), mode="RGB"))
        self._names = names

    def __len__(self):
        return len(self._y)

    def __getitem__(self, i):
        color = self._names[self._y[i]]
        from types import SimpleNamespace

        other = "red" if color != "red" else "blue"
        meta = {"objects": [{"color": color, "shape": "square", "size": "small", "cx": 2.0, "cy": 4.0},
                            {"color": other, "shape": "circle", "size": "large", "cx": 6.0, "cy": 4.0}],
                "relations": [[0, 1, "left of"]]}
        return SimpleNamespace(image=self._images[i], captions=[f"a {color} square", f"something {color}"],
                               label=int(self._y[i]) if self.view else -1, meta=meta)

    @property
    def classnames(self):
        return list(self._names) if self.view else None

    @property
    def templates(self):
        return ["a photo of a {} thing.", "a {} object"] if self.view else None

    @property
    def targets(self):
        return self._y.copy() if self.view else np.full(len(self._y), -1)

    def fingerprint(self):
        return f"{self.name}-{self.split}-{len(self)}-{int(self._y.sum())}"


class FakeModel(torch.nn.Module):
    """Images: mean RGB -> soft assignment to color prototypes -> color word vectors.
    Texts: bag of words where color words use the same vectors (other words weigh less)."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.dim = dim
        self.visual, self.text = torch.nn.Identity(), torch.nn.Identity()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.protos = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255  # (K, 3)
        self.color_vecs = torch.stack([word_vector(c, dim).float() for c in COLORS])  # (K, D)
        self.image_calls = 0

    def preprocess(self, train: bool = False):
        return lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)

    def encode_image(self, images, normalize=True):
        self.image_calls += 1
        rgb = images.mean(dim=(2, 3))  # (B, 3)
        assign = (-torch.cdist(rgb, self.protos) ** 2 / 0.01).softmax(dim=1)  # (B, K)
        return F.normalize(assign @ self.color_vecs, dim=-1)

    def encode_text(self, texts, normalize=True):
        rows = []
        for t in texts:
            words = t.lower().replace(".", "").split()
            rows.append(sum(word_vector(w, self.dim).float() * (1.0 if w in COLORS else 0.3) for w in words))
        return F.normalize(torch.stack(rows), dim=-1)

    def fingerprint(self):
        return "fake-color-model-v1"


@pytest.fixture
def fake_model():
    return FakeModel()


@pytest.fixture
def fake_data():
    return {"train": FakeDataset("train", 60, seed=1), "val": FakeDataset("val", 40, seed=2),
            "test": FakeDataset("test", 40, seed=3)}


@pytest.fixture
def bow_encoder():
    return bag_of_words()


@pytest.fixture
def ordered_encoder():
    return ordered_words()


@pytest.fixture
def make_scene():
    return scene


@pytest.fixture
def lookup_encoder():
    """An encoder from a {text: vector} table (unknown texts raise, so tests see what is asked)."""

    def make(table):
        def encode(texts):
            return torch.stack([torch.as_tensor(table[t], dtype=torch.float32) for t in texts])

        return encode

    return make


@pytest.fixture
def fakes():
    """The fake classes themselves, for tests that build variants."""
    from types import SimpleNamespace

    return SimpleNamespace(Model=FakeModel, Dataset=FakeDataset)
