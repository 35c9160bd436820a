"""``torchrun -m robustmm attack``: N processes (Gloo on CPU) give the records of one process, resume after a killed
rank without duplicates, run as two "nodes" on localhost, and refuse disagreeing ranks or unshared folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustmm.records import RecordStore

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
ATTACK = ["attack", "-d", "easy-vqa", "--limit", "16", "--batch-size", "4", "-a", "fgsm", "-a", "pgd-linf:steps=2",
          "-a", "noise-linf", "--device", "cpu"]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, nproc=2, extra=(), timeout=300, module=("-m", "robustmm")):
    command = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", *extra, *module, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout)


def _comparable(path: Path) -> list[dict]:
    rows = []
    for r in RecordStore(path).load():
        row = r.to_json()
        row.pop("seconds"), row.pop("run")
        rows.append(row)
    return sorted(rows, key=lambda r: (r["member"], r["attack_key"], r["example_id"]))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    result = subprocess.run([sys.executable, "-m", "robustmm", *ATTACK, "--out", out, "--name", "run"], capture_output=True,
                            text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    return out / "run"


def test_two_processes_write_the_records_of_one(one_process, tmp_path):
    result = _torchrun([*ATTACK, "--out", tmp_path, "--name", "run"])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert _comparable(run / "records.jsonl") == _comparable(one_process / "records.jsonl")
    assert not list(run.glob("records.rank-*.jsonl"))  # merged, then removed
    assert (run / "logs" / "rank-1.log").exists() and (run / "report.md").exists()
    def comparable_lines(path: Path) -> list[str]:
        """The report without its timing: the last cell of table rows (s/example), wall time, start, command, process count."""
        skip = ("| wall_seconds", "| started", "| processes", "# robustmm report", "robustmm attack")
        return [line.rsplit("|", 2)[0] if line.startswith("|") else line for line in path.read_text().splitlines()
                if not line.startswith(skip)]

    assert comparable_lines(run / "report.md") == comparable_lines(one_process / "report.md")  # verdicts, numbers, gallery


def _rank_pid(marker: str, rank: int) -> int:
    """The pid of the worker with RANK=``rank`` whose environment holds ROBUSTMM_TEST_JOB=``marker`` (from /proc)."""
    wanted = {f"RANK={rank}".encode(), f"ROBUSTMM_TEST_JOB={marker}".encode()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no worker with RANK={rank} in job {marker}")


def test_a_killed_rank_and_a_relaunch_with_another_count_leave_no_duplicates(one_process, tmp_path):
    command = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "robustmm", *map(str, ATTACK), "--out", str(tmp_path),
               "--name", "run"]
    marker = f"kill-{os.getpid()}-{time.time_ns()}"
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(_env(), ROBUSTMM_TEST_JOB=marker))
    rank1 = tmp_path / "run" / "records.rank-1.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (rank1.exists() and rank1.read_text().count("\n") >= 8):
        time.sleep(0.05)
    os.kill(_rank_pid(marker, 1), signal.SIGKILL)  # one rank dies mid-run; torchrun stops the other and fails
    assert job.wait(timeout=120) != 0
    assert rank1.exists() and not (tmp_path / "run" / "report.md").exists()
    relaunch = _torchrun([*ATTACK, "--out", tmp_path, "--name", "run"], nproc=3)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    records = RecordStore(tmp_path / "run" / "records.jsonl").load()
    assert len({r.key for r in records}) == len(records)
    assert _comparable(tmp_path / "run" / "records.jsonl") == _comparable(one_process / "records.jsonl")


def test_two_nodes_on_localhost(one_process, tmp_path):
    port = _free_port()
    common = [*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
              "--rdzv_id=robustmm-test"]
    args = ["-m", "robustmm", *map(str, ATTACK), "--out", str(tmp_path), "--name", "run"]
    nodes = [subprocess.Popen([*common, f"--node_rank={r}", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for r in (0, 1)]
    outputs = [n.communicate(timeout=300) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), [o[1][-2000:] for o in outputs]
    assert _comparable(tmp_path / "run" / "records.jsonl") == _comparable(one_process / "records.jsonl")


def test_more_ranks_than_work_finish_cleanly(tmp_path):
    result = _torchrun(["attack", "-d", "easy-vqa", "--limit", "1", "-a", "fgsm", "--device", "cpu", "--out", tmp_path,
                        "--name", "tiny"], nproc=3)
    assert result.returncode == 0, result.stderr[-3000:]
    records = RecordStore(tmp_path / "tiny" / "records.jsonl").load()
    assert len([r for r in records if r.attack == "fgsm"]) == 2 and len(records) == 4  # + fgsm's two transfer records


def _wrapped(tmp_path, body: str) -> tuple[str, ...]:
    """A launcher script that changes rank 1's command line before running robustmm."""
    script = tmp_path / "launch.py"
    script.write_text("import os, sys\nfrom robustmm.cli import main\n" + body + "\nmain()\n")
    return (str(script),)


def test_ranks_that_disagree_on_settings_are_refused(tmp_path):
    module = _wrapped(tmp_path, "if os.environ['RANK'] == '1':\n    sys.argv += ['--seed', '7']")
    result = _torchrun([*ATTACK, "--out", tmp_path, "--name", "run"], module=module)
    assert result.returncode != 0 and "ranks disagree on the run's settings" in result.stderr
    assert "Traceback" not in result.stderr.split("ranks disagree")[0][-500:]
    assert not (tmp_path / "run").exists()


def test_a_run_folder_that_a_rank_cannot_see_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    module = _wrapped(tmp_path, f"if os.environ['RANK'] == '1':\n    sys.argv[sys.argv.index('--out') + 1] = {str(elsewhere)!r}")
    result = _torchrun([*ATTACK, "--out", tmp_path / "shared", "--name", "run"], module=module)
    assert result.returncode != 0 and "storage every node shares" in result.stderr
    assert not (tmp_path / "shared" / "run" / "records.jsonl").exists()
