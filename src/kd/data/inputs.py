"""Data files read for a trained model (`kd evaluate --data`, `kd export --data`, `kd predict
--input`) with the settings `kd distill` reads its data with: a file that trained fine evaluates
the same way, without repeating how it is read.

The settings, later ones winning: kd's own-data defaults (as `kd distill --train FILE`: a CSV-like
file with a `text` column), the run's config.yaml when the model folder lies in a run folder, the
`--config` files, then `data.key=value` overrides.
"""

from __future__ import annotations

from pathlib import Path

from kd.config.settings import Config, DataConfig
from kd.config.sources import merge, parse_override, read_yaml_mapping
from kd.data.formats import read_labeled
from kd.data.labels import class_ids, name_classes
from kd.data.tables import RECORD_SUFFIXES, TAB_SUFFIXES, read_any_table
from kd.data.texts import LabeledTexts
from kd.errors import KDError
from kd.files import read_text

OWN_DATA = {"format": "csv", "text_column": "text", "labels_file": None, "label_columns": []}
TABLE_SUFFIXES = (".csv", *TAB_SUFFIXES, *RECORD_SUFFIXES)


def data_settings(model: str | Path, config_files: list[str], overrides: list[str]) -> DataConfig:
    """How to read data for the model in `model` (see the module's docstring)."""
    cfg = Config()
    merge(cfg, {"data": OWN_DATA})
    run_config = Path(model).parent / "config.yaml"
    for path in ([run_config] if run_config.is_file() else []) + list(config_files):
        merge(cfg, read_yaml_mapping(path, "config file"))
    for text in overrides:
        if not text.strip().startswith("data."):
            raise KDError(f"only data.* settings apply to reading a file for a model, got {text!r}")
        merge(cfg, parse_override(text))
    return cfg.validate().data


def read_for_model(path: str | Path, data: DataConfig, names: list[str], single_label: bool) -> LabeledTexts:
    """The labelled file at `path`, its labels in the model's order (`names`). A single-label
    model's data has one class column (or one 0/1 column per class), inferred when not named."""
    columns = data.label_columns or ([] if single_label else names)
    if not single_label and sorted(columns) != sorted(names):
        raise KDError(f"the model predicts {names}; data.label_columns gives {columns}")
    classes = class_ids(data.class_names) if data.class_names else (names if single_label else None)
    read = read_labeled(path, data.format, data.text_column, columns, data.labels_file, data.delimiter,
                        data.id_column, data.empty_texts, data.quoting,
                        "single_label" if single_label else "multi_label", classes)
    read = name_classes(read, data.class_names)
    if sorted(read.label_names) != sorted(names):
        raise KDError(f"the model predicts {names}; the data has {read.label_names}")
    read.labels = read.labels[:, [read.label_names.index(n) for n in names]]
    read.label_names = names
    return read


def input_texts(path: str | Path, data: DataConfig) -> list[str]:
    """The texts of a file for `kd predict`: a data file's (CSV, TSV, JSON lines, Parquet) text
    column, read as `kd distill` reads it; any other file, one text per line (lines end at a line
    feed, a carriage return before it dropped; blank lines hold no text)."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return [line.removesuffix("\r") for line in read_text(path, "input file").split("\n") if line.strip()]
    table = read_any_table(path, data.delimiter, data.quoting)
    header = table.rows[0]
    if data.text_column not in header:
        raise KDError(f"{path}: no column '{data.text_column}' (data.text_column); columns are {header}")
    column = header.index(data.text_column)
    return [row[column] for row in table.rows[1:]]
