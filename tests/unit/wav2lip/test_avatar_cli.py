"""`iris avatar prepare`: prepares and caches an avatar; bad input ends in one line and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iris_pipeline.cli import app, main

PHOTO = Path(__file__).resolve().parents[2] / "data" / "astronaut_face.jpg"


def test_avatar_prepare_reports_the_face_and_fills_the_cache(tmp_path):
    result = CliRunner().invoke(app, ["avatar", "prepare", str(PHOTO), "--cache-dir", str(tmp_path), "--fps", "30"])
    assert result.exit_code == 0, result.output
    assert "image (looped), 1 frame(s) of 256x256 at 30 fps" in result.output
    assert "face box of frame 0" in result.output
    assert len(list(tmp_path.glob("*.pt"))) == 1


def test_avatar_prepare_of_an_unreadable_file_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    monkeypatch.setattr(sys, "argv", ["iris", "avatar", "prepare", str(bad), "--cache-dir", str(tmp_path / "c")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: avatar {bad}: not a readable image"
