"""The same job on 1 and on 2 CPU processes (gloo) at the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
from safetensors.torch import load_file

from kd.runtime.cores import usable_cores

HERE = Path(__file__).resolve().parent
RANK_METRICS = ("macro_auc", "macro_f1", "macro_f1_tuned", "micro_f1", "exact_match")


def _launch(processes: int, overrides: list[str], audit_dir: Path) -> subprocess.CompletedProcess:
    audit_dir.mkdir(parents=True)
    launcher = ["--multi_gpu", "--num_processes", "2"] if processes == 2 else ["--num_processes", "1"]
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(HERE / "audited_distill.py"), *overrides]
    env = {**os.environ, "AUDIT_DIR": str(audit_dir), "OMP_NUM_THREADS": "1", "SHARD_ROWS": "48"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_match_one_and_only_the_main_process_writes(models, tmp_path):
    data = {"train": tiny.write_csv(tmp_path / "train.csv", 200, seed=0),  # 200 % 16: a partial batch
            "val": tiny.write_csv(tmp_path / "val.csv", 51, seed=1)}       # 51 % 16: uneven eval shards
    runs = {}
    for processes in (1, 2):
        root = tmp_path / f"p{processes}"
        overrides = tiny.tiny_overrides(
            {"bert": models["bert_nodropout"], "student": models["student_nodropout"]}, data, root, **{
                "mixed_precision": "no",  # fp32: bf16 would round the two processes' sums apart
                "teacher.train.batch_size": 16, "student.train.batch_size": 16,
                "teacher.train.eval_batch_size": 16, "student.train.eval_batch_size": 16})
        _launch(processes, overrides, root / "audit")
        run_dir = root / "runs" / "run"
        runs[processes] = json.loads((run_dir / "final_metrics.json").read_text())
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 4  # 2 teacher + 2 student epochs, each written once
        assert len(list((root / "cache" / "soft_targets").iterdir())) == 1  # 5 shards of up to 48 rows, joined
    assert runs[2]["num_processes"] == 2 and runs[1]["num_processes"] == 1
    for role in ("teacher", "student"):
        one, two = runs[1][role]["val"], runs[2][role]["val"]
        assert one["n"] == two["n"] == 51  # gathered without the padding duplicates
        assert runs[1][role]["best_epoch"] == runs[2][role]["best_epoch"]
        assert two["bce"] == pytest.approx(one["bce"], abs=1e-6)
        weights = [load_file(tmp_path / f"p{p}/runs/run/{role}/model.safetensors") for p in (1, 2)]
        assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0]) < 1e-5
        # Rank metrics jump when float noise reorders two near-tied scores: allow a few such swaps.
        # The tuned F1 is out of fold: thresholds tuned on ~25 rows move more with one swap.
        for key in RANK_METRICS:
            assert two[key] == pytest.approx(one[key], abs=0.03 if key == "macro_f1_tuned" else 0.01), (role, key)
    soft = [load_file(next((tmp_path / f"p{p}/cache/soft_targets").iterdir()))["logits"] for p in (1, 2)]
    assert (soft[0] - soft[1]).abs().max().item() < 1e-5  # each process labelled every other shard
    given = tiny.tiny_overrides({"bert": models["bert_nodropout"], "student": models["student_nodropout"]}, data,
                                tmp_path / "given", **{"teacher.path": tmp_path / "p2/runs/run/teacher",
                                                       "student.train.epochs": 1, "mixed_precision": "no"})
    _launch(2, given, tmp_path / "given" / "audit")  # a fine-tuned teacher, evaluated on 2 processes
    hit = tiny.tiny_overrides({"bert": models["bert_nodropout"], "student": models["student_nodropout"]}, data,
                              tmp_path / "p2", **{"mixed_precision": "no", "run_name": "hit", "student.train.epochs": 1,
                                                  "teacher.train.batch_size": 16, "student.train.batch_size": 16,
                                                  "teacher.train.eval_batch_size": 16,
                                                  "student.train.eval_batch_size": 16})
    _launch(2, hit, tmp_path / "p2" / "audit-hit")  # the same teacher and data: its soft targets hit the cache
    assert json.loads((tmp_path / "p2/runs/hit/final_metrics.json").read_text())["soft_targets_cache_hit"] is True
    checks = [(tmp_path / f"p2/audit-hit/rank-{r}.txt").read_text().splitlines()[0] for r in (0, 1)]
    assert checks == ["#checksums 1", "#checksums 0"]  # the main process checks the cached logits, once
    audit = tmp_path / "p2" / "audit"
    rank0 = (audit / "rank-0.txt").read_text().splitlines()[1:]
    rank1 = (audit / "rank-1.txt").read_text().splitlines()[1:]
    outputs = str(tmp_path / "p2")
    assert any(p.startswith(outputs) for p in rank0)
    shards = [p for p in rank1 if ".shards/" in p and p.endswith(".npy")]  # rank 1 saves the shards it labels
    assert len(shards) == 2 and not [p for p in rank1 if p.startswith(outputs) and "/audit/" not in p
                                     and ".shards/" not in p]


def test_a_single_cpu_process_under_accelerate_launch_uses_every_core(monkeypatch, capsys):
    """`accelerate launch` sets OMP_NUM_THREADS=1 by default; one CPU process should not train on one core."""

    import torch

    from kd.runtime.hardware import use_all_cores_under_accelerate_launch

    cores = usable_cores()
    before = torch.get_num_threads()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        torch.set_num_threads(1)
        use_all_cores_under_accelerate_launch()
        assert torch.get_num_threads() == cores
        assert ("using all" in capsys.readouterr().err) is (cores > 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ctrl-c", "diverge"])
def test_a_stop_on_one_rank_ends_every_rank_at_the_same_step(models, csv_data, tmp_path, mode):
    """Rank 1 alone is interrupted, or alone sees its loss diverge, at its 3rd step: both ranks
    decide together at the next check (step 16) and leave the loop there; none waits for the other."""
    audit = tmp_path / "audit"
    audit.mkdir()
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{"mixed_precision": "no"})
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(HERE / "stop_on_one_rank.py"), *overrides]
    env = {**os.environ, "AUDIT_DIR": str(audit), "OMP_NUM_THREADS": "1", "STOP_MODE": mode, "STOP_STEP": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode != 0
    steps = [int((audit / f"rank-{rank}.txt").read_text()) for rank in (0, 1)]
    assert steps == [16, 16], result.stderr[-3000:]
    if mode == "ctrl-c":
        assert "teacher: interrupted; the state is saved" in result.stderr
        progress = json.loads(__import__("safetensors").safe_open(
            str(tmp_path / "runs/run/state/teacher.safetensors"), "pt").metadata()["progress"])
        assert (progress["epoch"], progress["step"]) == (1, 16)
    else:
        assert result.stderr.count("the loss diverged at step 3") == 2  # each rank says so, at the same step


@pytest.mark.slow
def test_two_processes_killed_mid_epoch_resume_to_the_weights_of_an_uninterrupted_run(models, csv_data, tmp_path):
    """With dropout on, each rank draws its own masks: a 2-process run killed (SIGKILL) in the
    student's second epoch and resumed on 2 processes ends with an uninterrupted 2-process run's
    weights; resuming it on 1 process is refused in one line."""
    import signal
    import time

    from safetensors import safe_open

    def overrides(name: str) -> list[str]:
        return tiny.tiny_overrides(models, csv_data, tmp_path, **{
            "run_name": name, "mixed_precision": "no", "teacher.train.epochs": 1, "student.train.epochs": 3,
            "teacher.train.batch_size": 16, "student.train.batch_size": 16, "student.train.save_every_steps": 3})

    _launch(2, overrides("reference"), tmp_path / "audit-reference")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(HERE / "audited_distill.py")]
    (tmp_path / "audit-killed").mkdir()
    env = {**os.environ, "AUDIT_DIR": str(tmp_path / "audit-killed"), "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen([*command, *overrides("run")], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, deadline = tmp_path / "runs/run/state/student.safetensors", time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        try:
            with safe_open(str(state), "pt") as handle:
                progress = json.loads(handle.metadata()["progress"])
        except Exception:  # not written yet, or being renamed into place
            progress = None
        if progress and progress["epoch"] == 2 and progress["step"] > 0:
            for rank in (0, 1):  # both ranks (the launcher's elastic agent starts them in sessions of their own)
                os.kill(int((tmp_path / f"audit-killed/rank-{rank}.pid").read_text()), signal.SIGKILL)
            os.killpg(killed.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    run_dir = str(tmp_path / "runs/run")
    one = subprocess.run([sys.executable, "-m", "kd.cli", "distill", "--resume", run_dir], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 2 and "saved by 2 training process(es) and this run has 1" in one.stderr
    assert one.stderr.count("\n") == 1  # one line
    _launch(2, ["--resume", run_dir], tmp_path / "audit-resumed")
    tiny.assert_same_weights(tmp_path / "runs/run/student/model.safetensors",
                             tmp_path / "runs/reference/student/model.safetensors")
