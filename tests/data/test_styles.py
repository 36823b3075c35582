"""Each procedural style changes a tiny synthetic emoji (red disc-like square, black outline,
white background) the way its name says, and is deterministic."""

import numpy as np
import pytest
from PIL import Image

from vlkit.data.styles import STYLES, StyleMix, restyle
from vlkit.errors import UserError


def emoji_like() -> Image.Image:
    a = np.full((32, 32, 3), 255, np.uint8)
    a[8:24, 8:24] = (0, 0, 0)  # 2-px black outline ...
    a[10:22, 10:22] = (220, 40, 40)  # ... around a red fill
    a[14:18, 14:18] = (40, 200, 40)  # a green patch inside
    return Image.fromarray(a)


def dark_count(img: Image.Image) -> int:
    return int((np.asarray(img.convert("L")) < 80).sum())


def test_grey_has_equal_channels_and_keeps_luma():
    out = np.asarray(restyle(emoji_like(), "grey"))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out[16, 16, 0] != out[0, 0, 0]  # the glyph still differs from the background


def test_poster_has_at_most_four_levels_per_channel():
    src = np.asarray(emoji_like()).copy()
    src[..., 1] = np.arange(32, dtype=np.uint8)[None, :] * 8  # a ramp of 32 green levels
    out = np.asarray(restyle(Image.fromarray(src), "poster"))
    assert all(len(np.unique(out[..., c])) <= 4 for c in range(3))
    assert len(np.unique(out[..., 1])) == 4


def test_edges_are_dark_lines_on_white_at_the_boundaries():
    out = np.asarray(restyle(emoji_like(), "edges").convert("L"))
    assert set(np.unique(out)) <= {0, 255}
    assert out[0:5, 0:5].min() == 255 and out[19:21, 19:21].min() == 255  # flat areas stay white
    assert out[7, 16] == 0 and out[16, 7] == 0  # the white/black boundary of the square
    assert (out == 255).mean() > 0.6


def test_flat_removes_the_outline_and_has_few_colours():
    src, out = emoji_like(), restyle(emoji_like(), "flat")
    colours = np.unique(np.asarray(out).reshape(-1, 3), axis=0)
    assert len(colours) <= 6
    assert dark_count(out) < dark_count(src) // 4


def test_thick_and_thin_change_the_dark_outline():
    src = emoji_like()
    assert dark_count(restyle(src, "thick")) > dark_count(src)
    assert 0 < dark_count(restyle(src, "thin")) < dark_count(src)
    # a pixel one step outside the outline turns dark when thickened
    assert np.asarray(restyle(src, "thick"))[7, 16].max() == 0


def test_background_replaces_outer_white_only_and_depends_on_seed():
    src = np.asarray(emoji_like())
    a = np.asarray(restyle(emoji_like(), "background", seed=1))
    assert not (a[:8] == 255).all(axis=2).any()  # no pure-white background pixel
    assert (a[8:24, 8:24] == src[8:24, 8:24]).all()  # the glyph is untouched
    b = np.asarray(restyle(emoji_like(), "background", seed=2))
    assert not np.array_equal(a, b)


def test_white_inside_the_glyph_is_not_background():
    src = np.asarray(emoji_like()).copy()
    src[12:14, 12:14] = 255  # an "eye" enclosed by the outline
    out = np.asarray(restyle(Image.fromarray(src), "background", seed=3))
    assert (out[12:14, 12:14] == 255).all()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_is_deterministic(style):
    a = restyle(emoji_like(), style, seed=5).tobytes()
    assert a == restyle(emoji_like(), style, seed=5).tobytes()
    if style != "original":
        assert a != emoji_like().tobytes()


def test_unknown_style_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        restyle(emoji_like(), "sketch")
    msg = str(e.value)
    assert "\n" not in msg and "edges" in msg and "background" in msg


def test_style_mix_is_deterministic_and_mixes_styles():
    mix = StyleMix(p=0.8, seed=0)
    picks = [mix.pick(epoch=0, index=i) for i in range(200)]
    assert picks == [StyleMix(p=0.8, seed=0).pick(0, i) for i in range(200)]
    assert len(set(picks)) >= 6 and 0.1 < picks.count("original") / 200 < 0.35
    assert picks != [mix.pick(epoch=1, index=i) for i in range(200)]  # a new draw each epoch
    assert set(StyleMix(p=0.0).pick(0, i) for i in range(50)) == {"original"}
    assert set(StyleMix(p=1.0, styles=["grey"]).pick(0, i) for i in range(50)) == {"grey"}
    with pytest.raises(UserError):
        StyleMix(p=0.5, styles=["nope"])
