"""Interrupted tuning stages resume from their saved progress and end bit-identical to uninterrupted ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import TINY, TINY_STAGE
from robustmm.errors import RobustMMError


def _weights(folder: Path) -> bytes:
    name = "prompts.safetensors" if (folder / "prompts.safetensors").exists() else "model.safetensors"
    return (folder / name).read_bytes()


def _interrupt_at(monkeypatch, at: int, how: str) -> None:
    """Make the training loop be interrupted during step ``at``: a real Ctrl-C (SIGINT), or a crash
    (an exception that saves nothing, as a killed process would)."""
    from robustmm.tuning import loop

    schedule = loop._schedule

    def interrupting(step, total, warmup):
        if step == at:
            if how == "ctrl-c":
                signal.raise_signal(signal.SIGINT)
            else:
                raise RuntimeError("killed")
        return schedule(step, total, warmup)

    monkeypatch.setattr(loop, "_schedule", interrupting)


@pytest.mark.parametrize("how", ["ctrl-c", "crash"])
def test_an_interrupted_pretraining_resumes_to_the_uninterrupted_base(monkeypatch, tmp_path, how):
    from robustmm import tuning
    from robustmm.tuning import resume

    recipe = tuning.Recipe(model=TINY, pretrain=replace(TINY_STAGE, limit=40, epochs=2))  # 2 images a step: 40 steps
    whole = tuning.pretrain(recipe, tmp_path / "whole")
    if how == "crash":
        monkeypatch.setattr(resume, "SAVE_EVERY", 0.0)  # a progress file after every step, as every minute does
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 17, how)
        with pytest.raises(KeyboardInterrupt if how == "ctrl-c" else RuntimeError):
            tuning.pretrain(recipe, tmp_path / "cut")
    saved = tuning.progress_path(tmp_path / "cut", "pretrain base")
    assert saved.is_file() and not (tmp_path / "cut").exists()
    resumed = tuning.pretrain(recipe, tmp_path / "cut")
    assert _weights(tmp_path / "cut") == _weights(tmp_path / "whole")  # wrong captions drawn as if never stopped
    assert resumed["steps"] == whole["steps"] == 40 and resumed["final_loss"] == whole["final_loss"]
    assert not saved.parent.exists()  # the progress folder goes once the checkpoint is saved


def test_interrupted_finetuning_and_prompt_tuning_resume_bit_identically(monkeypatch, tmp_path, tiny_pair_dir):
    from robustmm import tuning
    from robustmm.models.prompts import PromptConfig

    base, prompt = tiny_pair_dir / "base", PromptConfig(length=4, reparam=True, reparam_hidden=8, init="activations")
    stages = {
        "finetune": lambda out: tuning.finetune(base, "easy-vqa", out, TINY_STAGE),
        "prompt": lambda out: tuning.prompt_tune(base, "easy-ve", out, prompt, replace(TINY_STAGE, lr=0.03)),
    }
    for name, run in stages.items():
        run(tmp_path / f"{name}-whole")
        with monkeypatch.context() as patch:
            _interrupt_at(patch, 1, "ctrl-c")
            with pytest.raises(KeyboardInterrupt):
                run(tmp_path / name)
        run(tmp_path / name)
        assert _weights(tmp_path / name) == _weights(tmp_path / f"{name}-whole"), name


def test_progress_of_other_settings_is_refused_in_one_sentence(monkeypatch, tmp_path, tiny_pair_dir):
    from robustmm import tuning

    with monkeypatch.context() as patch:
        _interrupt_at(patch, 1, "ctrl-c")
        with pytest.raises(KeyboardInterrupt):
            tuning.finetune(tiny_pair_dir / "base", "easy-vqa", tmp_path / "ft", TINY_STAGE)
    with pytest.raises(RobustMMError, match=r"holds the progress of a stage run with other settings; delete it"):
        tuning.finetune(tiny_pair_dir / "base", "easy-vqa", tmp_path / "ft", replace(TINY_STAGE, lr=3e-4))
    tuning.progress_path(tmp_path / "ft", "finetune easy-vqa").write_bytes(b"not safetensors")
    with pytest.raises(RobustMMError, match=r"is corrupt .*delete it to start the stage afresh"):
        tuning.finetune(tiny_pair_dir / "base", "easy-vqa", tmp_path / "ft", TINY_STAGE)


def test_ctrl_c_on_robustmm_tune_saves_progress_says_so_and_a_rerun_finishes(tiny_pair_dir, tmp_path):
    out = tmp_path / "ve-finetune"
    args = [sys.executable, "-m", "robustmm.cli", "tune", "finetune", "--base", str(tiny_pair_dir / "base"),
            "--dataset", "easy-ve", "--epochs", "2", "--out", str(out)]
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stdout.readline()  # without a terminal, a line every 5% of the steps
    assert first.startswith("finetune easy-ve: step "), first
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "interrupted: what was done so far is kept" in stderr and "rerun the same command to resume" in stderr
    assert (tmp_path / "ve-finetune.progress" / "finetune-easy-ve.safetensors").is_file() and not out.exists()
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "model.safetensors").is_file() and not (tmp_path / "ve-finetune.progress").exists()
    resumed_at = int(rerun.stdout.split("resuming at step ")[1].split("/")[0])
    assert resumed_at >= int(first.split("step ")[1].split("/")[0])  # it went on from where it stopped
