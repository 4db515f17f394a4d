"""`kd.Classifier`: fast multi-label inference from a folder written by kd.

The folder is a `save_pretrained` classifier or a `kd export` folder. With a `model.onnx`
in it, ONNX Runtime runs the model and PyTorch is never imported; otherwise PyTorch does.
Texts go through the Rust tokenizer (`tokenizer.json`), are sorted by token length and
cut into batches padded only to their own longest row, so a batch wastes little work.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kd.errors import KDError
from kd.evaluation.calibration import read_calibration, sigmoid, softmax
from kd.models.folder import read_decision, read_json, read_labels, single_label_folder
from kd.runtime.cores import usable_cores

ONNX_FILE = "model.onnx"
SMALL_BATCH_TOKENS = 512  # below this many tokens one thread beats a thread pool
# A longer row joins a batch only if the padding it adds to the rows already there costs less
# than a model call of its own, about as much as this many tokens (measured for BERT-Tiny on a
# 2-core CPU: 16 gave 7,000-7,300 texts/s batched, 64 gave 8,000-8,600, no cut 8,100-8,200).
CALL_COST_TOKENS = 64
DEFAULT_MAX_LENGTH = 200


def inference_max_length(requested: int | None, positions: int | None, trained: int | None = None) -> int:
    """Tokens per text: `requested`, refused beyond the model's position embeddings; None: the
    length the model was trained at (`trained`, its tokenizer's model_max_length), else
    DEFAULT_MAX_LENGTH, capped at the positions."""
    if requested is None:
        limit = positions or DEFAULT_MAX_LENGTH
        return min(trained, limit) if trained and trained < 1_000_000 else min(DEFAULT_MAX_LENGTH, limit)
    if requested < 2:
        raise KDError(f"max_length must be at least 2 ([CLS] and [SEP]), got {requested}")
    if positions is not None and requested > positions:
        raise KDError(f"max_length {requested} is beyond the model's {positions} position embeddings")
    return requested



def _onnx_runner(path: Path, num_threads: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """logits(input_ids, attention_mask): one single-thread session for small batches (no
    thread hand-off), one with `num_threads` for large ones."""
    import onnxruntime as ort

    def session(threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise KDError(f"cannot load the ONNX model {path}: {str(err).splitlines()[0]}") from None

    small, large = session(1), session(num_threads)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        sess = small if input_ids.size <= SMALL_BATCH_TOKENS else large
        return sess.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    return run


def _torch_runner(folder: Path, num_threads: int | None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """PyTorch's thread count is process-wide: it is changed only when asked for."""
    import torch

    from kd.models.saved import load_classifier

    model = load_classifier(folder)[0]
    if num_threads:
        torch.set_num_threads(num_threads)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(input_ids),
                         attention_mask=torch.from_numpy(attention_mask)).logits.float().numpy()
    return run


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64, padded on the right to the longest row."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    mask = np.arange(int(lengths.max())) < lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                            count=int(lengths.sum()))
    return ids, mask.astype(np.int64)


def length_batches(sorted_lengths: np.ndarray, batch_size: int) -> list[slice]:
    """Cut rows sorted by length into batches of at most batch_size, starting a new batch
    where padding the rows so far up to the next length would cost more than a model call."""
    batches, start = [], 0
    for i in range(1, len(sorted_lengths)):
        rows = i - start
        growth = int(sorted_lengths[i] - sorted_lengths[i - 1])
        if rows == batch_size or growth * rows > CALL_COST_TOKENS:
            batches.append(slice(start, i))
            start = i
    batches.append(slice(start, len(sorted_lengths)))
    return batches


class Classifier:
    """Per-label probabilities and label sets for texts.

    >>> clf = Classifier.from_pretrained("checkpoints/run/student-onnx")
    >>> clf.predict_proba(["thanks!"])     # (1, num_labels) float32
    >>> clf.predict(["thanks!"])           # [["gratitude"]]

    A multi-label model gives per-label sigmoids and predicts the labels over their thresholds; a
    single-label one (problem_type single_label_classification) gives softmax probabilities and
    predicts the class whose logit plus its tuned offset is highest (the most probable class where
    the offsets are 0). `decision` is the folder's rule: thresholds, or class offsets.
    """

    def __init__(self, tokenizer, run: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 labels: list[str], decision: np.ndarray, backend: str, pad_id: int,
                 batch_size: int = 64, temperatures: np.ndarray | None = None, single_label: bool = False):
        self.tokenizer, self._run = tokenizer, run
        self.labels, self.backend, self.single_label = labels, backend, single_label
        self.pad_id, self.batch_size = pad_id, batch_size
        self.temperatures = np.ones(1, np.float32) if temperatures is None else temperatures
        if single_label:
            # offsets are on the model's logits; the calibrated log-probabilities are logits / T
            # less a constant, so the same decisions need offsets / T
            self.offsets = decision.astype(np.float32)
            self.decision_offsets = (decision / self.temperatures[0]).astype(np.float32)
        else:
            # thresholds.json holds thresholds on the model's own sigmoids (transformers' pipeline gives
            # those); on calibrated probabilities the same decisions need sigmoid(logit(t) / T)
            self.thresholds = decision
            t = np.clip(decision.astype(np.float64), 1e-7, 1 - 1e-7)
            self.decision_thresholds = sigmoid(np.log(t / (1 - t)) / self.temperatures).astype(np.float32)

    @property
    def decision(self) -> np.ndarray:
        """The folder's decision rule: thresholds, or a single-label model's class offsets."""
        return self.offsets if self.single_label else self.thresholds

    @classmethod
    def from_pretrained(cls, folder: str | Path, backend: str = "auto", max_length: int | None = None,
                        batch_size: int = 64, num_threads: int | None = None) -> "Classifier":
        """backend: "auto" (ONNX when the folder has model.onnx), "onnx" or "torch"; max_length:
        tokens per text (None: the length the model was trained at, saved as its tokenizer's
        model_max_length; else 200), never beyond its position embeddings."""
        if batch_size < 1:
            raise KDError(f"batch_size must be at least 1, got {batch_size}")
        from tokenizers import Tokenizer

        folder = Path(folder)
        labels = read_labels(folder)
        config = read_json(folder / "config.json")
        if not (folder / "tokenizer.json").is_file():
            raise KDError(f"no tokenizer.json (a fast tokenizer) in {folder}")
        if backend == "auto":
            backend = "onnx" if (folder / ONNX_FILE).is_file() else "torch"
        if backend not in ("onnx", "torch"):
            raise KDError(f"unknown backend {backend!r}: use auto, onnx or torch")
        if backend == "onnx" and not (folder / ONNX_FILE).is_file():
            raise KDError(f"no {ONNX_FILE} in {folder}: export one with `kd export --onnx`")
        single_label = single_label_folder(folder)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        trained = (read_json(folder / "tokenizer_config.json").get("model_max_length")
                   if (folder / "tokenizer_config.json").is_file() else None)
        tokenizer.enable_truncation(inference_max_length(max_length, config.get("max_position_embeddings"), trained))
        threads = num_threads or usable_cores()
        run = (_onnx_runner(folder / ONNX_FILE, threads) if backend == "onnx"
               else _torch_runner(folder, num_threads))
        return cls(tokenizer, run, labels, read_decision(folder, labels, single_label), backend,
                   config.get("pad_token_id") or 0, batch_size, read_calibration(folder, labels), single_label)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise KDError("pass a list of texts, not one string")
        if not all(isinstance(text, str) for text in texts):
            raise KDError("every text must be a string")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        rows = [e.ids for e in self.tokenizer.encode_batch_fast(list(texts))]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        order = np.argsort(lengths, kind="stable")
        for batch in length_batches(lengths[order], self.batch_size):
            indices = order[batch]
            out[indices] = self._run(*pad_rows([rows[i] for i in indices], self.pad_id))
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_labels) float32 probabilities in `self.labels` order: per-label sigmoids,
        or one softmax over the classes of a single-label model, of the logits divided by the
        folder's calibrated temperatures (kd.evaluation.calibration; 1 without)."""
        return (softmax if self.single_label else sigmoid)(self.logits(texts) / self.temperatures).astype(np.float32)

    def predict(self, texts: Sequence[str]) -> list[list[str]]:
        """Per text, the labels whose probability reaches their threshold (in label order)."""
        return self.labels_of(self.predict_proba(texts))

    def labels_of(self, probs: np.ndarray) -> list[list[str]]:
        if self.single_label:
            with np.errstate(divide="ignore"):  # a probability of 0 is a log of -inf: never chosen
                chosen = (np.log(probs) + self.decision_offsets).argmax(axis=1)
            return [[self.labels[j]] for j in chosen]
        hits = probs >= self.decision_thresholds
        return [[name for name, hit in zip(self.labels, row) if hit] for row in hits]

    def records(self, probs: np.ndarray) -> list[dict]:
        """Per text {"labels": [...], "probabilities": {label: p to 6 decimals}}, as kd prints
        and serves them (labels decided on the unrounded probabilities)."""
        rounded = np.round(probs.astype(np.float64), 6).tolist()
        return [{"labels": labels, "probabilities": dict(zip(self.labels, row))}
                for labels, row in zip(self.labels_of(probs), rounded)]
