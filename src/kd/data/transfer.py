"""The transfer set: texts without labels that the teacher labels for the student.

Distillation needs the teacher's outputs, not gold labels, so a student can learn from more
texts than were labelled (Tang et al., 2019; Turc et al., 2019): unlabelled text files
(`distill.transfer_files`, one text per line) and augmented copies of the train texts
(`distill.augment_copies`). Each copy masks every word with probability `augment_mask_prob`
and, with probability `augment_ngram_prob`, keeps only a random n-gram (n from 1 to 5).
"""

from __future__ import annotations

import numpy as np

from kd.data.texts import blank
from kd.files import read_text


def read_texts(paths: list[str], key: str = "distill.transfer_files") -> list[str]:
    """The non-empty lines of UTF-8 text files; `key` (the config key that names them) goes into errors."""
    texts: list[str] = []
    for path in paths:
        texts += [line.strip() for line in read_text(path, f"text file ({key})").splitlines() if not blank(line)]
    return texts


def augmented_copies(texts: list[str], copies: int, mask_prob: float, ngram_prob: float, seed: int,
                     mask_token: str) -> list[str]:
    """`copies` augmented versions of every text (masking, n-gram sampling), reproducible by seed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            if words and rng.random() < ngram_prob:
                n = min(len(words), int(rng.integers(1, 6)))
                start = int(rng.integers(0, len(words) - n + 1))
                words = words[start:start + n]
            masked = rng.random(len(words)) < mask_prob
            out.append(" ".join(mask_token if m else w for w, m in zip(words, masked)))
    return out
