"""Fixtures the hostile suites share."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def images_folder(tmp_path) -> Path:
    """A folder of one good 32 x 32 image: what a command needs to get as far as the checkpoint it is refusing."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32), "red").save(folder / "a.png")
    return folder
