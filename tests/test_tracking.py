"""Experiment tracking through Accelerate's trackers: TensorBoard gets every number kd prints."""

import pytest
import tiny

from kd.cli import main


def test_tensorboard_gets_every_epoch_and_the_final_table(models, csv_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, log_with="tensorboard")]) == 0
    folder = tmp_path / "runs/run"  # the event file lies in the run folder
    events = EventAccumulator(str(folder)).Reload()
    tags = set(events.Tags()["scalars"])
    for stage in ("teacher", "student"):
        for key in ("train_loss", "epoch_time_s", "val/bce", "val/macro_auc", "val/macro_f1_tuned", "val/micro_f1"):
            assert f"{stage}/{key}" in tags
            assert [e.step for e in events.Scalars(f"{stage}/{key}")] == [1, 2]  # one point per epoch
    assert {"final/student/val/macro_auc", "final/teacher/parameters", "final/student/train_time_s"} <= tags
    assert not any("per_label" in tag for tag in tags)


def test_no_tracker_by_default(models, csv_data, tmp_path):
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 0
    assert not list((tmp_path / "runs/run").glob("events.out.tfevents.*"))
