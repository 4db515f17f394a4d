"""Labelled data read once into memory-mapped columns in the cache, and mapped back from there.

The files a name stands for (a glob of shards) are read one at a time by kd.data's strict reader,
so every check it makes still holds, and each file's texts, labels, ids and row numbers are
appended to columns on disk before the next file is read: memory holds one file's rows at a time,
however many shards there are. The columns live in a folder named for a hash of every file's
contents and every reading setting; a later run with the same hash maps them back without parsing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from kd.data.columns import TextColumn, offsets_from
from kd.data.labels import class_order
from kd.data.tables import expand
from kd.data.texts import LabeledTexts
from kd.errors import KDError
from kd.files import file_digest, staged_folder

Reader = Callable[[Path, "list[str] | None"], LabeledTexts]  # (file, known classes) -> LabeledTexts


def read_stored(path: str, store: Path, read_one: Reader, settings: dict):
    """LabeledTexts of every file `path` stands for, with texts, labels and ids memory-mapped from
    `store`/<key>/ (written there on first use); `settings`: what else decides the rows read."""
    files = expand(path)
    # a file's name ending decides its delimiter (.tsv, .csv, .jsonl): the same bytes under another one read otherwise
    contents = [[file_digest([f]), f.suffix.lower()] for f in files]
    key = hashlib.sha256(json.dumps({"files": contents, "settings": settings},
                                    sort_keys=True, default=str).encode()).hexdigest()[:24]
    folder = store / key
    try:
        return _load(folder)
    except (OSError, ValueError, KeyError):
        pass  # not written yet, or damaged: written below
    with staged_folder(folder) as staging:
        _write(path, files, read_one, staging)
    return _load(folder)


def _known_classes(files: list[Path], read_one: Reader) -> list[str] | None:
    """Shards of a class column share one set of classes: the union over all (a first pass)."""
    if len(files) == 1 or not read_one(files[0], None).class_column:
        return None
    return class_order({c for f in files for c in read_one(f, None).label_names})


def _write(path: str, files: list[Path], read_one: Reader, folder: Path) -> None:
    classes = _known_classes(files, read_one)
    meta, lengths, id_lengths, rows, hashes = None, [], [], [], []
    with open(folder / "texts.bin", "wb") as texts, open(folder / "labels.bin", "wb") as labels, \
            open(folder / "ids.bin", "wb") as ids:
        for f in files:
            part = read_one(f, classes)
            if meta is None:
                meta = {"label_names": part.label_names, "single_label": part.single_label,
                        "class_column": part.class_column, "has_ids": part.ids is not None, "dropped": 0,
                        "file_rows": 0}
            elif part.label_names != meta["label_names"] or part.single_label != meta["single_label"]:
                raise KDError(f"{f} has labels {part.label_names}, the first shard {meta['label_names']}")
            lengths.append(_append_texts(texts, part.texts))
            labels.write(np.ascontiguousarray(part.labels, np.float32).tobytes())
            if part.ids is not None:
                id_lengths.append(_append_texts(ids, part.ids))
                hashes.append(np.fromiter((hash(i) for i in part.ids), np.int64, len(part.ids)))
            rows.append(part.rows + meta["file_rows"])
            meta["dropped"] += part.dropped
            meta["file_rows"] += part.file_rows
    _finish_column(folder, "texts", np.concatenate(lengths))
    count = int(sum(map(len, lengths)))
    _npy_from_raw(folder / "labels.bin", folder / "labels.npy", "<f4", (count, len(meta["label_names"])))
    if meta["has_ids"]:
        _finish_column(folder, "ids", np.concatenate(id_lengths))
        _check_unique_ids(path, np.concatenate(hashes), TextColumn.load(folder, "ids"))
    (folder / "ids.bin").unlink(missing_ok=True)
    np.save(folder / "rows.npy", np.concatenate(rows))
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _append_texts(handle, texts) -> np.ndarray:
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    handle.write(b"".join(encoded))
    return np.fromiter(map(len, encoded), np.int64, len(encoded))


def _finish_column(folder: Path, name: str, lengths: np.ndarray) -> None:
    offsets = offsets_from(lengths)
    np.save(folder / f"{name}-offsets.npy", offsets)
    _npy_from_raw(folder / f"{name}.bin", folder / f"{name}.npy", "|u1", (int(offsets[-1]),))


def _npy_from_raw(raw: Path, npy: Path, dtype: str, shape: tuple) -> None:
    """A .npy file of raw bytes, streamed (never in memory whole)."""
    with open(npy, "wb") as out, open(raw, "rb") as source:
        np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
        shutil.copyfileobj(source, out, 1 << 24)
    raw.unlink()


def _check_unique_ids(path: str, hashes: np.ndarray, ids: TextColumn) -> None:
    """Ids repeated across shards (each shard's own were checked as it was read): equal hashes
    first, then the ids themselves."""
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    for i in same:
        if ids[int(order[i])] == ids[int(order[i + 1])]:
            raise KDError(f"{path}: id {ids[int(order[i + 1])]!r} is in more than one shard")


def _load(folder: Path):
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return LabeledTexts(TextColumn.load(folder, "texts"), np.load(folder / "labels.npy", mmap_mode="c"),
                        meta["label_names"], meta["dropped"], meta["single_label"], meta["class_column"],
                        TextColumn.load(folder, "ids") if meta["has_ids"] else None,
                        np.load(folder / "rows.npy"), meta["file_rows"])
