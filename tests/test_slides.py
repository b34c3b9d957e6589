"""Large images: windows of tiled, pyramidal TIFFs equal the same windows of a whole read, thumbnails come from
pyramid levels, tissue is found on a thumbnail, and masks encoded band by band equal the whole mask's RLE."""

from __future__ import annotations

import pickle
import sys

import cv2
import numpy as np
import pytest
import tifffile

from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io import slides
from lightning_cv.io.images import write_image
from lightning_cv.io.masks import RLEWriter, rle_encode, rle_encode_bands
from lightning_cv.io.slides import Slide
from lightning_cv.io.tiles import tile_grid, tile_starts, tissue_mask, tissue_tiles

SIZE = (300, 500)


def write_pyramid(path, image, levels=3, tile=64):
    """A tiled BigTIFF with `levels` - 1 halved levels in SubIFDs (tifffile's pyramid pattern)."""
    extra = {"photometric": "rgb"} if image.ndim == 3 else {}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(image, tile=(tile, tile), subifds=levels - 1, compression="zlib", **extra)
        for k in range(1, levels):
            tif.write(image[:: 2**k, :: 2**k], tile=(tile, tile), subfiletype=1, compression="zlib", **extra)
    return path


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory, image):
    return write_pyramid(tmp_path_factory.mktemp("slides") / "slide.tif", image)


@pytest.fixture(scope="module")
def flat(tmp_path_factory, image):
    path = tmp_path_factory.mktemp("slides") / "flat.tiff"
    tifffile.imwrite(path, image, photometric="rgb", tile=(64, 64))
    return path


def padded_window(image, y, x, h, w, pad=1000):
    """The reference: the window of the whole image zero-padded on every side."""
    big = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return big[pad + y : pad + y + h, pad + x : pad + x + w]


WINDOWS = [(0, 0, 64, 64), (37, 101, 90, 130), (250, 450, 50, 50), (299, 499, 1, 1),  # inside
           (-20, -30, 64, 64), (280, 470, 64, 64), (-10, 200, 400, 40), (100, -50, 30, 700),  # across borders
           (400, 600, 16, 16), (-100, 0, 50, 50), (10, 10, 0, 5)]  # outside, empty


@pytest.mark.parametrize("name", ["pyramid", "flat"])
def test_windows_equal_the_whole_read(request, image, name):
    slide = Slide(request.getfixturevalue(name))
    for y, x, h, w in WINDOWS:
        window = slide.read(y, x, h, w)
        assert window.shape == (h, w, 3) and window.dtype == np.uint8
        np.testing.assert_array_equal(window, padded_window(image, y, x, h, w), err_msg=f"window {(y, x, h, w)}")


def test_sizes_come_from_the_header(pyramid, flat):
    assert tifffile.TiffFile(pyramid).is_bigtiff
    assert Slide(pyramid).size == SIZE
    assert Slide(pyramid).levels == [(300, 500), (150, 250), (75, 125)]
    assert Slide(flat).levels == [SIZE]


def test_size_without_decoding_and_a_codec_missing_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, np.zeros((100, 120, 3), np.uint8), tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(5)  # LZW: tifffile decodes it only with imagecodecs
    slide = Slide(path)
    assert slide.size == (100, 120)
    codecs = type(tifffile.TIFF.DECOMPRESSORS)  # as without imagecodecs: no LZW decoder
    monkeypatch.setattr(codecs, "__getitem__", _without(codecs.__getitem__, tifffile.COMPRESSION.LZW))
    with pytest.raises(DataError, match="LZW tiles need imagecodecs.*pip install imagecodecs"):
        slide.read(0, 0, 8, 8)


def _without(lookup, missing):
    def get(self, key):
        if key == missing:
            raise KeyError(key)
        return lookup(self, key)
    return get


@pytest.mark.parametrize("compression", ["jpeg", "lzw"])
def test_scanner_codecs_decode_through_imagecodecs(tmp_path, image, compression):
    """Whole-slide scanners write JPEG (lossy: close) or LZW (exact) tiles."""
    path = tmp_path / f"{compression}.tif"
    smooth = cv2.GaussianBlur(image, (0, 0), 4)  # a stained slide, not noise: what JPEG is made for
    tifffile.imwrite(path, smooth, tile=(64, 64), compression=compression, photometric="rgb")
    window = Slide(path).read(10, 20, 90, 70).astype(int)
    tolerance = 3 if compression == "jpeg" else 0
    assert np.abs(window - smooth[10:100, 20:90]).mean() <= tolerance


def test_thumbnail_reads_the_smallest_level_large_enough(monkeypatch, pyramid, flat, image):
    levels_read = []
    region = slides._TiffSource.region
    monkeypatch.setattr(slides._TiffSource, "region",
                        lambda self, level, ys, xs: levels_read.append(level) or region(self, level, ys, xs))
    slide = Slide(pyramid)
    # 125 px: level 2 exactly, the same pixels as every 4th of a slide without a pyramid
    np.testing.assert_array_equal(slide.thumbnail(125), image[::4, ::4])
    np.testing.assert_array_equal(Slide(flat).thumbnail(125), image[::4, ::4])
    # 200 px: level 1 (250 px) shrunk
    expected = cv2.resize(image[::2, ::2], (200, 120), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(slide.thumbnail(200), expected)
    # 400 px: only full resolution is that large; the largest reduced level is taken as it is
    np.testing.assert_array_equal(slide.thumbnail(400), image[::2, ::2])
    assert levels_read == [2, 0, 1, 1]  # full resolution read only by the slide without a pyramid
    # a small image: whole
    np.testing.assert_array_equal(slide.thumbnail(600), image)
    assert levels_read[-1] == 0


def test_strided_thumbnail_without_a_pyramid(flat, image):
    thumb = Slide(flat).thumbnail(100)  # every 5th pixel: 60x100
    np.testing.assert_array_equal(thumb, image[::5, ::5])
    assert Slide(flat).thumbnail(90).shape == (54, 90, 3)  # every 5th, then shrunk


def test_grey_rgba_planar_and_16_bit_tiffs_read_as_rgb(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (50, 60), dtype=np.uint8)
    rgba = rng.integers(0, 256, (50, 60, 4), dtype=np.uint8)
    planar = rng.integers(0, 256, (3, 50, 60), dtype=np.uint8)
    deep = rng.integers(0, 65536, (50, 60), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "grey.tif", grey, tile=(16, 16))
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"], tile=(16, 16))
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate", tile=(16, 16))
    tifffile.imwrite(tmp_path / "deep.tif", deep, tile=(16, 16))
    expected = {"grey": np.repeat(grey[..., None], 3, axis=2), "rgba": rgba[..., :3], "planar": planar.transpose(1, 2, 0),
                "deep": np.repeat((deep / 65535 * 255).round().astype(np.uint8)[..., None], 3, axis=2)}
    for name, pixels in expected.items():
        np.testing.assert_array_equal(Slide(tmp_path / f"{name}.tif").read(-5, 7, 40, 60),
                                      padded_window(pixels, -5, 7, 40, 60), err_msg=name)


def test_png_is_read_whole_and_windowed(tmp_path, image):
    path = tmp_path / "small.png"
    write_image(path, image)
    slide = Slide(path)
    assert slide.levels == [SIZE]
    np.testing.assert_array_equal(slide.read(-10, 480, 50, 40), padded_window(image, -10, 480, 50, 40))
    np.testing.assert_array_equal(slide.thumbnail(100), image[::5, ::5])


def test_slides_pickle_for_workers(pyramid, image):
    slide = Slide(pyramid)
    slide.read(0, 0, 4, 4)
    again = pickle.loads(pickle.dumps(slide))
    np.testing.assert_array_equal(again.read(5, 6, 7, 8), image[5:12, 6:14])
    again.close()


def test_vendor_slides_need_openslide(monkeypatch, tmp_path, image):
    path = tmp_path / "scan.svs"
    tifffile.imwrite(path, image, photometric="rgb", tile=(64, 64))
    monkeypatch.setitem(sys.modules, "openslide", None)  # import fails
    with pytest.raises(DataError, match=r"OpenSlide: pip install openslide-python openslide-bin"):
        Slide(path).read(0, 0, 1, 1)


def test_vendor_slides_through_openslide(tmp_path, image):
    pytest.importorskip("openslide")
    path = write_pyramid(tmp_path / "scan.svs", image)  # a plain tiled TIFF: OpenSlide's generic reader
    slide = Slide(path)
    assert slide.size == SIZE
    np.testing.assert_array_equal(slide.read(-20, 470, 64, 64), padded_window(image, -20, 470, 64, 64))
    slide.close()


def synthetic_slide(size=(512, 768), blob=(128, 256, 256, 512), glass=255, noise=0, seed=0):
    """Glass, a black scanner border on the left, a pink rectangle of tissue (top, left, bottom, right)."""
    rng = np.random.default_rng(seed)
    slide = np.full((*size, 3), glass, dtype=np.int16)
    slide[:, :16] = 0
    top, left, bottom, right = blob
    slide[top:bottom, left:right] = (215, 120, 180)
    slide += rng.integers(-noise, noise + 1, slide.shape) if noise else 0
    truth = np.zeros(size, dtype=bool)
    truth[top:bottom, left:right] = True
    return np.clip(slide, 0, 255).astype(np.uint8), truth


@pytest.mark.parametrize("glass", [255, 212])  # blank white; greyish glass, its noise faintly coloured
def test_tissue_is_the_coloured_blob_not_glass_or_border(glass):
    slide, truth = synthetic_slide(glass=glass, noise=12)
    np.testing.assert_array_equal(tissue_mask(slide), truth)
    assert not tissue_mask(np.full((40, 50, 3), 250, np.uint8)).any()  # blank glass
    assert not tissue_mask(np.zeros((40, 50, 3), np.uint8)).any()  # blank black


def test_tissue_on_a_grey_slide_is_the_dark_part():
    rng = np.random.default_rng(2)
    slide = np.clip(205 + rng.integers(-6, 7, (120, 160)), 0, 255).astype(np.uint8)  # grey glass, not blank
    slide[30:90, 40:100] = 110
    truth = np.zeros(slide.shape, dtype=bool)
    truth[30:90, 40:100] = True
    np.testing.assert_array_equal(tissue_mask(slide), truth)
    np.testing.assert_array_equal(tissue_mask(np.repeat(slide[..., None], 3, axis=2)), truth)


def test_tile_grid_covers_the_image_as_tiled_inference_does():
    grid = tile_grid((300, 500), tile=128, overlap=32)
    assert sorted({y for y, _ in grid}) == tile_starts(300, 128, 32)
    assert sorted({x for _, x in grid}) == tile_starts(500, 128, 32)
    assert len(grid) == len(tile_starts(300, 128, 32)) * len(tile_starts(500, 128, 32))
    assert grid[:, 0].max() + 128 == 300 and grid[:, 1].max() + 128 == 500
    np.testing.assert_array_equal(tile_grid((50, 60), 128), [[0, 0]])
    with pytest.raises(UserInputError, match="overlap < tile"):
        tile_grid((300, 500), tile=64, overlap=64)


@pytest.mark.parametrize("min_share", [0.0, 0.5, 0.99])
def test_tissue_tiles_from_a_pyramid_thumbnail(tmp_path, min_share):
    image, truth = synthetic_slide(blob=(120, 200, 400, 520))  # on the 1/8 grid; one tile wholly inside
    slide = Slide(write_pyramid(tmp_path / "tissue.tif", image, levels=4))
    thumb = slide.thumbnail(96)  # level 3: 1/8
    assert thumb.shape == (64, 96, 3)
    found = tissue_tiles(tissue_mask(thumb), slide.size, tile=128, overlap=0, min_share=min_share)
    shares = {(y, x): truth[y : y + 128, x : x + 128].mean() for y, x in tile_grid(slide.size, 128)}
    assert sorted(map(tuple, found.tolist())) == sorted(t for t, share in shares.items() if share > min_share)
    assert len(found) > 0
    for y, x in found:  # the tiles read at full resolution hold the tissue's colour
        assert (slide.read(y, x, 128, 128) == (215, 120, 180)).all(axis=2).any()


def test_tissue_tiles_of_a_blank_slide():
    assert tissue_tiles(np.zeros((10, 20), bool), (1000, 2000), tile=256).shape == (0, 2)


def blobby_mask(shape, rng, density):
    """Random masks with long runs (smoothed noise) and single pixels, crossing band borders in both orders."""
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 3)
    mask = noise > np.quantile(noise, 1 - density)
    mask ^= rng.random(shape) < 0.02
    return mask.astype(np.uint8) * 255


def bands_of(mask, order, heights):
    """Horizontal bands (order C) or vertical ones (order F) of the given sizes, cycling through them."""
    length = mask.shape[0] if order == "C" else mask.shape[1]
    start, i = 0, 0
    while start < length:
        stop = min(length, start + heights[i % len(heights)])
        yield mask[start:stop] if order == "C" else mask[:, start:stop]
        start, i = stop, i + 1


@pytest.mark.parametrize("order", ["C", "F"])
def test_band_rle_equals_whole_rle(order):
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 5), (64, 48), (97, 131)]:
        masks = [blobby_mask(shape, rng, d) for d in (0.1, 0.5, 0.9)]
        masks += [np.zeros(shape, np.uint8), np.ones(shape, np.uint8)]
        full_lines = np.zeros(shape, np.uint8)
        full_lines[::3] = 1  # whole rows: runs that cross every C band border
        full_lines[:, ::4] = 1  # whole columns: the same for F
        for mask in [*masks, full_lines]:
            whole = rle_encode(mask, order)
            for heights in ([1], [2], [5], [7, 1, 3], [1000]):
                assert rle_encode_bands(bands_of(mask, order, heights), shape, order) == whole, (shape, heights)


def test_rle_writer_checks_its_bands():
    writer = RLEWriter((4, 6), "C")
    with pytest.raises(ValueError, match=r"whole rows, shaped \(n, 6\)"):
        writer.add(np.ones((2, 5)))
    writer.add(np.ones((3, 6)))
    writer.add(np.zeros((0, 6)))
    with pytest.raises(ValueError, match="held 18 of a 4x6 mask's 24 pixels"):
        writer.result()
    writer.add(np.ones((1, 6)))
    assert writer.result() == "1 24"
    with pytest.raises(ValueError, match="more pixels"):
        writer.add(np.ones((1, 6)))
    with pytest.raises(ValueError, match=r"whole columns, shaped \(4, n\)"):
        RLEWriter((4, 6), "F").add(np.ones((3, 6)))
