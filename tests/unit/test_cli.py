"""The CLI entry points and their error shape."""

from __future__ import annotations

import subprocess
import sys

from stream_r1.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "config" in out


def test_python_m_entry():
    r = subprocess.run([sys.executable, "-m", "stream_r1", "config", "--list"], capture_output=True, text=True)
    assert r.returncode == 0 and "tiny_cpu" in r.stdout


def test_bad_override_is_one_clear_line(capsys):
    assert main(["config", "tiny_cpu", "--set", "reward.mode=MQQ"]) == 2
    err = capsys.readouterr().err
    assert "reward.mode='MQQ'" in err and "Traceback" not in err
