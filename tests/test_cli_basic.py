"""The ``robustmm`` command line, run as a real subprocess (``python -m robustmm.cli``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [sys.executable, "-m", "robustmm.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_list_shows_the_datasets():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in ("easy-vqa", "easy-ve", "vqa-v2", "snli-ve"):
        assert name in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [("bogus",), ("list", "--no-such-option")])
def test_unknown_command_or_option_exits_2_without_traceback(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.strip()  # says what was wrong


def test_no_arguments_prints_help():
    result = run_cli()
    assert "list" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_tuning_refuses_an_unknown_precision_in_one_sentence(tmp_path):
    for command in (("recipe",), ("pretrain",), ("finetune", "--base", str(tmp_path / "base")), ("prompt", "--base", str(tmp_path / "base"))):
        result = run_cli("tune", *command, "--out", str(tmp_path / "out"), "--precision", "fp16")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "precision must be one of fp32, bf16" in result.stderr and not (tmp_path / "out").exists()


def test_pretrain_refuses_an_unknown_objective_in_one_sentence(tmp_path):
    result = run_cli("tune", "pretrain", "--out", str(tmp_path / "base"), "--objective", "caption", "--objective", "guess")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "objectives must be some of" in result.stderr and not (tmp_path / "base").exists()
    result = run_cli("tune", "pretrain", "--out", str(tmp_path / "base"), "--then-epochs", "2", "--then-objective", "guess")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "objectives must be some of" in result.stderr and not (tmp_path / "base").exists()
