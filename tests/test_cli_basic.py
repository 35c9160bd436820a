"""The ``robustmm`` command line, run as a real subprocess (``python -m robustmm.cli``) or in-process where training is stubbed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

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


def test_list_shows_the_reliable_evaluation_attacks():
    result = run_cli("list")
    names = {line.split("│")[1].strip() for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert {"apgd-ce", "apgd-dlr", "square", "worst-case", "transfer", "joint"} <= names


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


def test_tune_stage_settings_and_seed_default_to_the_recipe_for_the_dataset_and_options_override_them(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from robustmm import cli, tuning

    calls = []
    monkeypatch.setattr(tuning, "finetune", lambda base, name, out, stage, seed, device: calls.append((name, stage, seed)))
    monkeypatch.setattr(tuning, "prompt_tune", lambda base, name, out, prompt, stage, seed, device: calls.append((name, prompt, stage, seed)))
    common = ["--base", str(tmp_path / "base"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    for args in (["finetune", "--dataset", "easy-ve"], ["finetune", "--dataset", "easy-vqa", "--epochs", "1", "--precision", "bf16", "--seed", "3"],
                 ["prompt", "--dataset", "easy-ve"], ["prompt", "--dataset", "easy-vqa", "--length", "8", "--init", "random", "--lr", "0.02"]):
        result = CliRunner().invoke(cli.app, ["tune", *args, *common])
        assert result.exit_code == 0, result.output
    recipe = tuning.Recipe()
    assert calls[0] == ("easy-ve", recipe.finetune_ve, recipe.seed)
    assert calls[1] == ("easy-vqa", replace(recipe.finetune, epochs=1.0, precision="bf16"), 3)
    assert calls[2] == ("easy-ve", recipe.prompt_ve, recipe.prompt_tune_ve, recipe.seed)
    assert calls[3] == ("easy-vqa", replace(recipe.prompt, length=8, init="random"), replace(recipe.prompt_tune, lr=0.02), recipe.seed)


def test_the_cli_default_limit_is_the_runs_default():
    """`robustmm attack` with no --limit runs DEFAULT_LIMIT examples per dataset (the size the benchmarks and the
    example report were measured at); the CLI spells the number out to keep its start-up free of heavy imports."""
    import inspect

    from robustmm.cli import attack_command
    from robustmm.experiment import DEFAULT_LIMIT, RunSpec

    assert inspect.signature(attack_command).parameters["limit"].default.default == DEFAULT_LIMIT == RunSpec().limit
