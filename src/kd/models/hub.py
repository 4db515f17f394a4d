"""Where models come from: aliases, the published architectures of the aliased models (their
vocab ships with kd, so they build offline), tokenizers and configs, and whether a model's
pretrained weights can be loaded at all (the local hub cache, a folder, or the hub)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertTokenizer,
    DistilBertTokenizer,
    PretrainedConfig,
)

from kd.errors import KDError

ALIASES = {
    "distilbert": "distilbert-base-uncased",
    "bert-tiny": "google/bert_uncased_L-2_H-128_A-2",
    "bert-mini": "google/bert_uncased_L-4_H-256_A-4",
    "bert-small": "google/bert_uncased_L-4_H-512_A-8",
    "bert-medium": "google/bert_uncased_L-8_H-512_A-8",
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}


def _bert(layers: int, hidden: int, heads: int) -> dict:
    return {"model_type": "bert", "num_hidden_layers": layers, "hidden_size": hidden,
            "num_attention_heads": heads, "intermediate_size": 4 * hidden}

# Published architectures of the aliased models, all on the same uncased 30,522-token vocab.
ARCHITECTURES = {
    "distilbert-base-uncased": {"model_type": "distilbert"},
    "google/bert_uncased_L-2_H-128_A-2": _bert(2, 128, 2),
    "google/bert_uncased_L-4_H-256_A-4": _bert(4, 256, 4),
    "google/bert_uncased_L-4_H-512_A-8": _bert(4, 512, 8),
    "google/bert_uncased_L-8_H-512_A-8": _bert(8, 512, 8),
    "sentence-transformers/all-MiniLM-L6-v2": _bert(6, 384, 12),
}


def resolve_name(name: str) -> str:
    """Alias -> hub id; hub ids and local folders pass through."""
    return ALIASES.get(name, name)


def wordpiece_tokenizer(vocab: list[str], model_type: str = "bert"):
    """A fast uncased WordPiece tokenizer over the given vocab lines."""
    cls = DistilBertTokenizer if model_type == "distilbert" else BertTokenizer
    return cls(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True,
               model_max_length=512)


def _bundled_vocab() -> list[str]:
    text = resources.files("kd").joinpath("assets/vocab-uncased.txt").read_text(encoding="utf-8")
    return text.splitlines()


def _load_or_known(name: str, what: str, load, build_known):
    """load(hub id); for a known alias, from the local cache only, else build_known(its
    architecture): kd ships what it needs of them, so they never wait on an unreachable hub."""
    model_id = resolve_name(name)
    try:
        return load(model_id, local_files_only=True) if model_id in ARCHITECTURES else load(model_id)
    except (OSError, ValueError) as err:
        if model_id not in ARCHITECTURES:
            raise KDError(f"cannot load the {what} of '{name}' ({model_id}): {err}") from None
        return build_known(dict(ARCHITECTURES[model_id]))


def load_tokenizer(name: str):
    """The model's tokenizer; for a known alias offline, the bundled uncased vocab."""
    return _load_or_known(name, "tokenizer", AutoTokenizer.from_pretrained,
                          lambda spec: wordpiece_tokenizer(_bundled_vocab(), spec["model_type"]))


def load_model_config(name: str) -> PretrainedConfig:
    """The model's config; for a known alias offline, its published architecture."""
    return _load_or_known(name, "config", AutoConfig.from_pretrained,
                          lambda spec: AutoConfig.for_model(spec.pop("model_type"), **spec))


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def missing_weights(name: str) -> str | None:
    """Why the pretrained weights of `name` cannot be loaded, or None when they can: a local
    folder must hold them, a hub id must be in the local cache or answered by the hub (asked
    once, briefly, so that an unreachable hub costs seconds, not a run)."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache

    model_id = resolve_name(name)
    if Path(model_id).is_dir():
        found = any(f for pattern in ("*.safetensors", "*.bin") for f in Path(model_id).glob(pattern))
        return None if found else f"the folder {model_id} holds no weights"
    if any(isinstance(try_to_load_from_cache(model_id, f), str) for f in WEIGHT_FILES):
        return None
    if constants.HF_HUB_OFFLINE:
        return f"{model_id} is not in the local hub cache (HF_HUB_OFFLINE is set)"
    try:
        model_info(model_id, timeout=5)
    except Exception:  # noqa: BLE001  unreachable, unknown or gated: hub errors come in many types
        return f"{model_id} is not in the local hub cache, and the hub did not serve it"
    return None
