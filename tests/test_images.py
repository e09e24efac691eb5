"""The one decoder: every odd input decodes the same way, or fails naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import images


def _bgr(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)


def test_colour_png_round_trips_as_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "red.png"), _bgr(rgb))
    out = images.read_image(tmp_path / "red.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize(
    ("name", "pixels"),
    [
        ("gray.png", np.full((10, 12), 77, np.uint8)),
        ("rgba.png", np.dstack([np.full((10, 12, 3), 77, np.uint8),
                                np.full((10, 12), 5, np.uint8)])),
        ("deep.png", np.full((10, 12), 77 * 257, np.uint16)),
    ],
)
def test_gray_rgba_and_16_bit_become_rgb_uint8(tmp_path: Path, name: str,
                                               pixels: np.ndarray) -> None:
    cv2.imwrite(str(tmp_path / name), pixels)
    out = images.read_image(tmp_path / name)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    assert np.all(out == 77)


def test_non_ascii_and_space_paths(tmp_path: Path) -> None:
    folder = tmp_path / "Prüfteil größe"
    folder.mkdir()
    _ok, data = cv2.imencode(".png", np.full((8, 8, 3), 9, np.uint8))
    path = folder / "Bild 01 ✓.png"
    path.write_bytes(data.tobytes())
    assert images.read_image(path).shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is not an image", "not a decodable image"),
    ],
)
def test_bad_bytes_name_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(images.ImageError, match=reason) as info:
        images.read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [0.1, 0.8, 0.99])
def test_truncated_jpeg_is_refused(tmp_path: Path, keep: float) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    _ok, data = cv2.imencode(".jpg", noise)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[: int(len(data) * keep)])
    with pytest.raises(images.ImageError, match=r"truncated|not a decodable"):
        images.read_image(path)


def test_header_pixel_limit_refuses_before_decoding() -> None:
    header = bytearray(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR")
    header += (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    with pytest.raises(images.ImageError, match="30000x30000 pixels"):
        images.decode(bytes(header), "huge.png")


def test_header_size_reads_every_format_opencv_writes() -> None:
    for ext in (".jpg", ".bmp", ".png", ".tif", ".webp", ".ppm", ".gif", ".ras"):
        _ok, data = cv2.imencode(ext, np.zeros((21, 34, 3), np.uint8))
        assert images.header_size(data.tobytes()) == (34, 21), ext


def test_a_cut_jpeg_says_truncated_before_its_unreadable_header() -> None:
    with pytest.raises(images.ImageError, match="truncated JPEG"):
        images.decode(b"\xff\xd8\xff\xe0" + bytes(200), "cut.jpg")


def test_a_known_format_whose_header_hides_its_size_is_refused() -> None:
    with pytest.raises(images.ImageError, match=r"^odd\.gif: GIF header does not say the image"):
        images.decode(b"GIF89a\x01", "odd.gif")


def test_prepare_crops_then_resizes() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255  # right half white
    spec = images.InputSpec(height=10, width=10, crop=(0.5, 0.0, 1.0, 1.0))
    out = images.prepare(image, spec)
    assert out.shape == (10, 10, 3)
    assert np.all(out == 255)
    assert images.prepare(image, images.InputSpec(height=50, width=40)).shape == (50, 40, 3)


def test_input_spec_round_trip_and_validation() -> None:
    spec = images.InputSpec(height=96, width=128, crop=(0.1, 0.2, 0.9, 1.0))
    assert images.InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="resize"):
        images.InputSpec(height=8, width=8, resize="cubic-ish")
    with pytest.raises(ValueError, match="crop"):
        images.InputSpec(height=8, width=8, crop=(0.5, 0.0, 0.4, 1.0))


def _grey_frame_with_patch(x0: int, y0: int, size: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(140, 15, (180, 320, 1)), 0, 255).astype(np.uint8).repeat(3, 2)
    frame[y0 : y0 + size, x0 : x0 + size] = (40, 200, 120)  # a green label on a grey belt
    return frame


@pytest.mark.parametrize(("x0", "y0"), [(40, 30), (250, 120), (0, 0), (290, 150)])
def test_colour_window_follows_the_colourful_object(x0: int, y0: int) -> None:
    frame = _grey_frame_with_patch(x0, y0)
    cx, cy = images.colour_centre(frame)
    if 0 < x0 < 290 and 0 < y0 < 150:  # (at an edge the blur's reflection pulls the peak out)
        assert abs(cx - (x0 + 15)) <= 6 and abs(cy - (y0 + 15)) <= 6
    box = images.colour_window_box(frame, (0.5, 0.5))
    bx0, by0, bx1, by1 = box
    assert (bx1 - bx0, by1 - by0) == (160, 90)  # the window keeps its size ...
    assert min(bx0, by0) >= 0 and bx1 <= 320 and by1 <= 180  # ... inside the frame
    assert bx0 <= x0 and by0 <= y0 and x0 + 30 <= bx1 and y0 + 30 <= by1  # around the object
    spec = images.InputSpec(height=45, width=80, colour_window=(0.5, 0.5))
    out = images.prepare(frame, spec)
    np.testing.assert_array_equal(
        out, cv2.resize(frame[by0:by1, bx0:bx1], (80, 45), interpolation=cv2.INTER_AREA))


def test_colour_window_round_trips_and_is_validated() -> None:
    spec = images.InputSpec(height=96, width=128, colour_window=(0.625, 0.8))
    assert images.InputSpec.from_dict(spec.to_dict()) == spec
    assert images.InputSpec.from_dict(
        {"height": 96, "width": 128, "colour_window": [0.625, 0.8]}) == spec  # from JSON
    for bad in [(0.0, 0.5), (0.5, 1.2), (0.5,)]:
        with pytest.raises(ValueError, match="colour_window"):
            images.InputSpec(height=8, width=8, colour_window=bad)


@pytest.mark.parametrize("record", [
    "224x224", {"width": 224}, {"height": "224", "width": 224}, {"height": 0, "width": 4},
    {"height": 4, "width": 4, "crop": "all"}, {"height": 4, "width": 4, "crop": [0, "a", 1, 1]},
    {"height": 4, "width": 4, "resize": ["area"]}, {"height": True, "width": 4},
])
def test_a_malformed_input_spec_record_is_a_value_error_saying_what(record: object) -> None:
    with pytest.raises(ValueError, match=r"mapping|must be"):
        images.InputSpec.from_dict(record)  # type: ignore[arg-type]
