"""Fonts for writing words on images, taken from matplotlib's own package data.

No system font is assumed: matplotlib ships the DejaVu, STIX and Computer Modern families, so
every machine that installs clipaln has them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageFont

#: The three fonts of the attack protocol (docs/method.md section 4): what training attacks use.
TRAIN_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
#: Fonts never used during training, for the "unseen style" evaluation.
UNSEEN_FONTS = ("DejaVuSans-BoldOblique.ttf", "STIXGeneralBol.ttf", "DejaVuSerif-BoldItalic.ttf")


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_path(name: str) -> Path:
    """Path of a font file by name; a bare file name is looked up in matplotlib's fonts."""
    path = Path(name)
    if not path.is_absolute():
        path = font_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"font not found: {path} (clipaln uses the fonts that ship with matplotlib; "
            f"reinstall matplotlib or pass an existing .ttf path)"
        )
    return path


@functools.lru_cache(maxsize=512)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(name)), size=max(1, int(size)))
