"""Write perf_analyzer input-data files for lora_classifier (committed beside this script).

Each file holds 16 entries of one row each; with `-b 16` perf_analyzer sends them as one 16-text request.
  one_adapter_{short,long}.json   every text on bench-0
  mixed8_{short,long}.json        texts spread round-robin over bench-0 .. bench-7
Short texts are ~16 MiniLM tokens, long ones ~128.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 16
ADAPTERS = [f"bench-{i}" for i in range(8)]
WORDS = (
    "order refund delivery late package arrived damaged customer support account password reset invoice payment "
    "card declined shipping address change cancel subscription upgrade plan discount coupon product quality great "
    "terrible service fast slow helpful rude store app crash login error update battery screen price warranty return "
    "exchange size color stock available tomorrow today week month please thanks again never always the a my your "
    "is was not very really and but because when after before with without for from"
).split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write(name: str, texts: list[str], model_ids: list[str]) -> None:
    data = [
        {"TEXT": {"content": [t], "shape": [1]}, "MODEL_ID": {"content": [m], "shape": [1]}}
        for t, m in zip(texts, model_ids)
    ]
    (HERE / name).write_text(json.dumps({"data": data}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    rng = random.Random(2026)
    for length, words in (("short", 13), ("long", 110)):
        texts = [sentence(rng, words) for _ in range(ROWS)]
        write(f"one_adapter_{length}.json", texts, [ADAPTERS[0]] * ROWS)
        write(f"mixed8_{length}.json", texts, [ADAPTERS[i % len(ADAPTERS)] for i in range(ROWS)])


if __name__ == "__main__":
    main()
