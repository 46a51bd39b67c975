"""LibMTL_rgb.progress: bars follow the terminal (off when stderr is a file or pipe), overridable
by ``LIBMTL_RGB_PROGRESS`` / ``--progress``."""
import io
import os

import pytest

from LibMTL_rgb.progress import PROGRESS_ENV, progress_bar, progress_enabled, set_progress_mode


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_follows_the_stream(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_enabled(stream=Terminal()) is True
    assert progress_enabled(stream=io.StringIO()) is False  # a log file: no \r bars
    assert progress_enabled("off", Terminal()) is False and progress_enabled("on", io.StringIO()) is True


def test_environment_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "on")
    assert progress_enabled(stream=io.StringIO()) is True
    monkeypatch.setenv(PROGRESS_ENV, "OFF")
    assert progress_enabled(stream=Terminal()) is False
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(ValueError, match=PROGRESS_ENV):
        progress_enabled()
    set_progress_mode("on")
    assert os.environ[PROGRESS_ENV] == "on"
    with pytest.raises(ValueError, match="--progress"):
        set_progress_mode("loud")


def test_progress_bar_writes_only_when_enabled(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    log, tty = io.StringIO(), Terminal()
    assert list(progress_bar(range(3), file=log, desc="x")) == [0, 1, 2]
    assert log.getvalue() == ""
    assert list(progress_bar(range(3), file=tty, desc="x")) == [0, 1, 2]
    assert "3/3" in tty.getvalue()
    assert list(progress_bar(range(2), file=tty, disable=True, mode="on")) == [0, 1]  # explicit disable wins
    monkeypatch.setenv(PROGRESS_ENV, "on")
    forced = io.StringIO()
    list(progress_bar(range(2), file=forced))
    assert "2/2" in forced.getvalue()
