"""Builders for tests: a tiny BERT from a config and a generated vocabulary, real PEFT training outputs in
every accepted variant, and the contract's reference computation (plain transformers + peft, one model at
a time) written independently of the engine. Nothing is downloaded."""

from __future__ import annotations

import itertools
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
CJK = "类别好坏体育美食新闻天气音乐电影科技"


def vocabulary() -> list[str]:
    """A deterministic WordPiece vocabulary: syllable words, letters, digits, word pieces and some CJK."""
    syllables = [c + v for c, v in itertools.product(CONSONANTS, VOWELS)]
    words = [a + b for a, b in itertools.product(syllables, syllables)][:600]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    pieces = ["##" + ch for ch in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return SPECIAL_TOKENS + chars + pieces + list(CJK) + syllables + words


WORDS = [w for w in vocabulary() if len(w) == 4 and w.isalpha()]


def make_tiny_base(
    directory: Path, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int | None = None
) -> Path:
    """Save a randomly initialised BERT and its tokenizer to `directory` (loadable with AutoModel): tiny by
    default; `hidden=768, layers=12, heads=12, intermediate=3072` is BERT-base's shape."""
    directory.mkdir(parents=True, exist_ok=True)
    # transformers 5 takes the vocabulary itself (`vocab_file=` would be silently ignored: all [UNK]).
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocabulary())}, do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(directory))
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or hidden * 2,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(directory))
    return directory


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


@dataclass
class OutputSpec:
    """How to build one training output; every field maps to a variant of training-outputs.md."""

    stem: str = "model"
    rank: int = 4
    alpha: float = 8.0
    target_modules: Sequence[str] = ("query", "value")
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    use_rslora: bool = False
    weights_format: str = "safetensors"  # or "bin"
    num_labels: int = 3
    head_layout: str = "linear"  # or "two-layer"
    head_bias: bool = True
    head_prefix: str = "classifier."
    head_hidden: int = 16  # H' of the two-layer head
    pooling: str | None = None  # None: bare state dict (cls); "cls"/"mean": wrapped with pooling
    labels_format: str = "list"  # list | tuple | index_to_label | label_to_index
    label_names: Sequence = ()
    seed: int = 0


def labels_for(spec: OutputSpec) -> list:
    return list(spec.label_names) or [f"类别{chr(ord('A') + i)}" for i in range(spec.num_labels)]


def make_training_output(models_root: Path, model_dir: str, base_dir: Path, spec: OutputSpec | None = None) -> Path:
    """Write a real PEFT adapter, head and label map under `models_root/model_dir`; returns the directory."""
    spec = spec or OutputSpec()
    out = models_root / model_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    base = AutoModel.from_pretrained(str(base_dir))
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        rank_pattern=dict(spec.rank_pattern),
        alpha_pattern=dict(spec.alpha_pattern),
        use_rslora=spec.use_rslora,
        init_lora_weights=False,  # random A and B: the adapter really changes the encoder's output
    )
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(str(out / f"{spec.stem}.lora"), safe_serialization=spec.weights_format == "safetensors")
    torch.save(head_object(spec, base.config.hidden_size), out / f"{spec.stem}.head.pt")
    with (out / f"{spec.stem}.head.pt.pkl").open("wb") as handle:
        pickle.dump(label_object(spec), handle)
    return out


def head_object(spec: OutputSpec, hidden: int) -> dict:
    gen = torch.Generator().manual_seed(spec.seed + 1000)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.5

    if spec.head_layout == "linear":
        state = {"weight": randn(spec.num_labels, hidden)}
        if spec.head_bias:
            state["bias"] = randn(spec.num_labels)
    else:
        state = {
            "dense.weight": randn(spec.head_hidden, hidden),
            "dense.bias": randn(spec.head_hidden),
            "out_proj.weight": randn(spec.num_labels, spec.head_hidden),
            "out_proj.bias": randn(spec.num_labels),
        }
    state = {spec.head_prefix + k: v for k, v in state.items()}
    return state if spec.pooling is None else {"state_dict": state, "pooling": spec.pooling}


def label_object(spec: OutputSpec):
    names = labels_for(spec)
    if spec.labels_format == "list":
        return names
    if spec.labels_format == "tuple":
        return tuple(names)
    if spec.labels_format == "index_to_label":
        return {i: name for i, name in enumerate(names)}
    if spec.labels_format == "label_to_index":
        return {name: i for i, name in enumerate(names)}
    raise ValueError(spec.labels_format)


# ------------------------------------------------------------------------------ reference computation


class Reference:
    """training-outputs.md's reference: plain transformers + peft, one model and one text at a time."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))

    def probabilities(self, output_dir: Path, texts: Sequence[str], max_length: int = 512) -> list[list[float]]:
        stem = next(output_dir.glob("*.head.pt")).name[: -len(".head.pt")]
        model = PeftModel.from_pretrained(
            AutoModel.from_pretrained(str(self.base_dir)), str(output_dir / f"{stem}.lora")
        )
        model.eval()
        head_obj = torch.load(output_dir / f"{stem}.head.pt", weights_only=True)
        pooling = "cls"
        if "state_dict" in head_obj:
            pooling, head_obj = head_obj.get("pooling", "cls"), head_obj["state_dict"]
        head = {k.split(".", 1)[1] if k.startswith(("classifier.", "head.")) else k: v for k, v in head_obj.items()}
        results = []
        with torch.no_grad():
            for text in texts:
                encoded = self.tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
                hidden = model(**encoded).last_hidden_state[0]
                h = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
                if "dense.weight" in head:
                    h = torch.tanh(head["dense.weight"] @ h + head["dense.bias"])
                    logits = head["out_proj.weight"] @ h + head["out_proj.bias"]
                else:
                    logits = head["weight"] @ h + head.get("bias", torch.zeros(head["weight"].shape[0]))
                results.append(torch.softmax(logits, dim=-1).tolist())
        return results


def touch_output(directory: Path, stem: str = "m") -> Path:
    """A training output complete by its file names only (the files hold nothing loadable): for what looks at
    names (locating, the listing's index)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.lora").mkdir(exist_ok=True)
    (directory / f"{stem}.lora" / "adapter_config.json").write_bytes(b"{}")
    (directory / f"{stem}.lora" / "adapter_model.safetensors").write_bytes(b"x")
    (directory / f"{stem}.head.pt").write_bytes(b"x")
    (directory / f"{stem}.head.pt.pkl").write_bytes(b"x")
    return directory


def clone_output(template: Path, directory: Path) -> Path:
    """A copy of the training output `template` at `directory` made of hard links: thousands of real outputs
    for the price of their directories."""
    for source in sorted(template.rglob("*")):
        target = directory / source.relative_to(template)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
    return directory
