"""The CLI entry points and their error shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream_r1.cli import main


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, argv
    return capsys.readouterr().out


def test_help_lists_every_command_and_each_has_working_help(capsys):
    # The commands are the modules of stream_r1/commands (found here from the files, not from the CLI's
    # own discovery), so a module the CLI fails to register, or a subparser that breaks, fails this test.
    import importlib

    cmd_dir = Path(__file__).resolve().parents[2] / "stream_r1" / "commands"
    modules = [importlib.import_module(f"stream_r1.commands.{f.stem}")
               for f in sorted(cmd_dir.glob("*.py")) if not f.name.startswith("_")]
    assert len(modules) >= 10
    top = " ".join(_help(["--help"], capsys).split())
    for mod in modules:
        assert mod.NAME in top and " ".join(mod.HELP.split())[:40] in top, mod.NAME
        sub = _help([mod.NAME, "--help"], capsys)
        assert sub.startswith(f"usage: stream-r1 {mod.NAME}"), sub[:200]


def test_python_m_entry():
    r = subprocess.run([sys.executable, "-m", "stream_r1", "config", "--list"], capture_output=True, text=True)
    assert r.returncode == 0 and "tiny_cpu" in r.stdout


def test_bad_override_is_one_clear_line(capsys):
    assert main(["config", "tiny_cpu", "--set", "reward.mode=MQQ"]) == 2
    err = capsys.readouterr().err
    assert "reward.mode='MQQ'" in err and "Traceback" not in err
