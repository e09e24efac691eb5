"""The one table of synthetic kinds: class names, image sizes, generator version.

Deliberately free of cv2/numpy, so configuration code (ingest's Config) can validate a
kind name at config time without loading the image libraries.
"""

from __future__ import annotations

from indvision.errors import did_you_mean

#: Bump whenever the drawing changes, so :func:`indvision.synth.ensure` regenerates stale sets.
GENERATOR_VERSION: int = 1

#: kind -> class names, in label-index order (the one table of classes).
KINDS: dict[str, tuple[str, ...]] = {
    "defect": ("ok", "scratch", "inclusion", "patches", "crazing", "pitted"),
    "parcel": ("intact", "dented", "torn", "wet"),
}

#: kind -> image size as (width, height) in pixels.
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "defect": (128, 128),
    "parcel": (192, 108),
}


def check_kind(name: str) -> tuple[str, ...]:
    """Return the class names of synthetic kind ``name``.

    Raises ``ValueError`` with a did-you-mean suggestion for an unknown kind, so a caller
    (a config's validation) can turn it into its own one-line error.
    """
    if name not in KINDS:
        raise ValueError(f"unknown synthetic kind {name!r}{did_you_mean(str(name), KINDS)}")
    return KINDS[name]
