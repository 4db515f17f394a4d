"""Output and cache folders, input files and concurrent runs: one-line errors before any work,
and nothing left behind by a killed writer."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
import yaml

from kd.cli import main
from kd.files import folder_lock, write_atomically
from kd.teacher import logits_cache as soft_targets


@pytest.mark.parametrize("key", ["output_dir", "cache_dir"])
def test_a_folder_setting_that_names_a_file_fails_before_reading_data(models, csv_data, tmp_path, capsys, key):
    (tmp_path / "in-the-way").write_text("a file")
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{key: tmp_path / "in-the-way",
                                                                   "data.train": tmp_path / "absent.csv"})
    assert main(["distill", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{key}={tmp_path / 'in-the-way'}: {tmp_path / 'in-the-way'} is a file" in err


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's read-only /sys")
@pytest.mark.parametrize("key", ["output_dir", "cache_dir"])
def test_a_folder_that_cannot_be_written_fails_before_the_teacher_trains(models, csv_data, tmp_path, capsys, key):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{key: "/sys/kd-cannot-write-here"})
    assert main(["distill", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kd: error: {key}=/sys/kd-cannot-write-here is not writable") and err.count("\n") == 1
    assert not (tmp_path / "runs/run/teacher").exists()


def test_a_full_disk_is_one_line(models, csv_data, tmp_path, capsys, monkeypatch):
    def full(path, array):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(soft_targets, "_save_array", full)  # the teacher's first shard of soft targets
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("kd: error: No space left on device: ") and "Traceback" not in err
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def test_a_second_run_of_the_same_name_is_refused_while_the_first_runs(models, csv_data, tmp_path, capsys):
    run_dir = tmp_path / "runs/run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("the first run's config\n")
    with folder_lock(run_dir):  # as the first run holds it
        assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 2
    assert "is in use by another kd process" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "the first run's config\n"
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 0  # free again
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["run_name"] == "run"


def test_two_runs_started_at_once_one_is_refused(models, csv_data, tmp_path):
    command = [sys.executable, "-m", "kd.cli", "distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((run.wait(timeout=300), run.stderr.read()) for run in runs)
    assert [code for code, _ in outcomes] == [0, 2]
    assert "is in use by another kd process" in outcomes[1][1]


def test_predict_input_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"fine\ncaf\xe9\n")
    assert main(["predict", "--model", str(tmp_path), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input file is not UTF-8" in err and "byte offset 8, line 2" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["predict", "--model", "m", "--batch-size", "0", "text"], ["predict", "--model", "m", "--max-length", "0", "t"],
    ["predict", "--model", "m", "--max-length", "1", "t"], ["evaluate", "--model", "m", "--data", "d", "--max-length", "x"],
    ["sweep", "s.yaml", "--jobs", "0"], ["serve", "--model", "m", "--workers", "0"],
    ["serve", "--model", "m", "--max-texts", "0"], ["serve", "--model", "m", "--port", "-1"]])
def test_command_line_numbers_out_of_range_are_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2 and "argument" in capsys.readouterr().err


def test_max_length_beyond_the_model_is_refused_at_inference(models, tmp_path, capsys):
    folder = tiny.make_classifier(tmp_path / "clf", models["student"], steps=1)
    assert main(["predict", "--model", str(folder), "--max-length", "65", "text"]) == 2
    assert "max_length 65 is beyond the model's 64 position embeddings" in capsys.readouterr().err


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_a_writer_killed_mid_write_leaves_nothing_for_good(tmp_path):
    target = tmp_path / "cache/entry.safetensors"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from kd.files import write_atomically\n"
        "def slow(p): Path(p).write_bytes(b'half'); print('writing', flush=True); time.sleep(60)\n"
        f"write_atomically(Path({str(target)!r}), slow)")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert [p.name for p in target.parent.iterdir()] == [f"entry.safetensors.tmp{child.pid}"]
    write_atomically(target, lambda p: Path(p).write_bytes(b"whole"))
    assert [p.name for p in target.parent.iterdir()] == ["entry.safetensors"] and target.read_bytes() == b"whole"
