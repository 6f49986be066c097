"""Write the demo's labelled datasets (committed beside this script, in datasets/<task>/{train,test}.csv).

Three tasks as our users name them: labels in Chinese, texts in English (the demo base model,
all-MiniLM-L6-v2, reads little Chinese; a production base such as a Chinese BERT reads Chinese texts).
Texts come from templates and fillers written here, deduplicated, shuffled with a fixed seed and split
80/20 into train and a held-out test set. Rerunning rewrites the same files.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_LABEL = 110

TASKS: dict[str, dict[str, tuple[list[str], dict[str, list[str]]]]] = {
    "support_intent": {
        "退款": (
            [
                "I want a refund for {item}",
                "please refund my money for the {item}",
                "how do I get my money back for {item}",
                "the {item} is {flaw}, I want a refund",
                "can you return the payment for my {item}",
                "I was charged twice for the {item}, refund me",
                "refund request for order {num}",
                "cancel my order {num} and give me my money back",
                "when will my refund for the {item} arrive",
                "I returned the {item} {when} but still no refund",
                "I need my money back, the {item} is {flaw}",
            ],
            {
                "item": [
                    "headphones",
                    "jacket",
                    "blender",
                    "phone case",
                    "shoes",
                    "lamp",
                    "backpack",
                    "watch",
                    "keyboard",
                    "coffee maker",
                ],
                "flaw": ["broken", "damaged", "the wrong size", "not working", "missing parts", "scratched"],
                "num": ["1042", "88311", "5567", "230019", "7781", "40400"],
                "when": ["last week", "yesterday", "two weeks ago", "a month ago"],
            },
        ),
        "物流查询": (
            [
                "where is my package",
                "my {item} has not arrived yet",
                "when will order {num} be delivered",
                "tracking for order {num} has not updated {when}",
                "the courier never delivered my {item}",
                "is my {item} shipped yet",
                "how long does shipping to {city} take",
                "my parcel is stuck in {city}",
                "the delivery of my {item} is late",
                "can you check the shipping status of order {num}",
                "the driver left my {item} at the wrong address",
            ],
            {
                "item": [
                    "headphones",
                    "jacket",
                    "blender",
                    "phone case",
                    "shoes",
                    "lamp",
                    "backpack",
                    "watch",
                    "keyboard",
                    "coffee maker",
                ],
                "num": ["1042", "88311", "5567", "230019", "7781", "40400"],
                "when": ["since monday", "for three days", "all week", "since yesterday"],
                "city": ["Berlin", "Chicago", "Madrid", "Toronto", "Osaka", "Lyon"],
            },
        ),
        "账户问题": (
            [
                "I cannot log in to my account",
                "reset my password please",
                "my account was {state}",
                "I forgot the password for my account",
                "how do I change the email on my account",
                "I never received the verification code",
                "my account says {state}",
                "two factor login is not working on my {device}",
                "someone else logged into my account",
                "how can I delete my account",
                "the app logs me out on my {device}",
            ],
            {
                "state": ["locked", "suspended", "hacked", "disabled", "blocked"],
                "device": ["phone", "laptop", "tablet", "computer"],
            },
        ),
        "商品咨询": (
            [
                "does the {item} come in {color}",
                "is the {item} waterproof",
                "what size is the {item}",
                "is the {item} in stock",
                "what material is the {item} made of",
                "does the {item} work with {device}",
                "how long is the warranty on the {item}",
                "can you recommend a {item} for {use}",
                "what is the battery life of the {item}",
                "is the {item} available in {color}",
                "which {item} is better for {use}",
            ],
            {
                "item": [
                    "headphones",
                    "jacket",
                    "blender",
                    "phone case",
                    "shoes",
                    "lamp",
                    "backpack",
                    "watch",
                    "keyboard",
                    "coffee maker",
                ],
                "color": ["black", "red", "blue", "white", "green"],
                "device": ["iphone", "android", "windows", "a mac"],
                "use": ["running", "travel", "the office", "kids", "hiking", "gaming"],
            },
        ),
    },
    "review_sentiment": {
        "正面": (
            [
                "I {love} this {item}",
                "the {item} is {good}",
                "{good} {item}, would buy again",
                "really happy with the {item}",
                "the {item} works {well}",
                "five stars, the {item} is {good}",
                "the {item} exceeded my expectations",
                "great value, the {item} is {good}",
                "my family loves the {item}",
                "the {item} arrived fast and works {well}",
                "highly recommend this {item}",
            ],
            {
                "love": ["love", "really like", "adore", "enjoy"],
                "item": [
                    "blender",
                    "jacket",
                    "headphones",
                    "lamp",
                    "backpack",
                    "watch",
                    "sofa",
                    "kettle",
                    "printer",
                    "mattress",
                ],
                "good": ["excellent", "fantastic", "great", "wonderful", "superb", "amazing", "perfect"],
                "well": ["perfectly", "great", "flawlessly", "beautifully"],
            },
        ),
        "负面": (
            [
                "I {hate} this {item}",
                "the {item} is {bad}",
                "{bad} {item}, never buying again",
                "really disappointed with the {item}",
                "the {item} stopped working after {when}",
                "one star, the {item} is {bad}",
                "the {item} broke after {when}",
                "waste of money, the {item} is {bad}",
                "the {item} arrived damaged and support ignored me",
                "returning this {item}, it is {bad}",
                "do not buy this {item}",
            ],
            {
                "hate": ["hate", "really dislike", "regret buying", "cannot stand"],
                "item": [
                    "blender",
                    "jacket",
                    "headphones",
                    "lamp",
                    "backpack",
                    "watch",
                    "sofa",
                    "kettle",
                    "printer",
                    "mattress",
                ],
                "bad": ["terrible", "awful", "useless", "cheap junk", "horrible", "disappointing", "poorly made"],
                "when": ["two days", "a week", "one use", "a month"],
            },
        ),
    },
    "news_topic": {
        "体育": (
            [
                "{team} won the {event} final",
                "the {team} striker scored twice in the {event}",
                "{team} signs a new coach before the {event}",
                "injury rules the {team} captain out of the {event}",
                "record crowd watches {team} in the {event}",
                "{team} beat their rivals in extra time",
                "the {event} season opens with a {team} victory",
                "{team} fans celebrate the title",
                "olympic sprinter breaks the world record",
                "tennis star advances to the {event} semifinal",
                "{team} lose at home in the {event}",
            ],
            {
                "team": ["Madrid", "the Lakers", "Arsenal", "the Yankees", "Bayern", "the All Blacks", "Juventus"],
                "event": ["league", "cup", "championship", "playoff", "tournament", "open"],
            },
        ),
        "科技": (
            [
                "{company} unveils a new {product}",
                "{company} releases a faster {product}",
                "researchers build a {tech} chip",
                "{company} fixes a security flaw in its {product}",
                "the new {product} from {company} uses {tech}",
                "startup raises funds to develop {tech}",
                "{company} announces an update for its {product} software",
                "scientists demonstrate {tech} breakthrough",
                "{company} recalls a faulty {product}",
                "developers praise the new {product} from {company}",
                "{tech} promises faster computers",
            ],
            {
                "company": ["Apple", "Google", "Samsung", "Microsoft", "Nvidia", "Huawei", "Intel"],
                "product": [
                    "smartphone",
                    "laptop",
                    "processor",
                    "tablet",
                    "smartwatch",
                    "graphics card",
                    "operating system",
                ],
                "tech": ["quantum", "artificial intelligence", "battery", "robotics", "satellite", "5G"],
            },
        ),
        "财经": (
            [
                "{index} falls as {worry}",
                "{index} rises after strong earnings",
                "central bank raises interest rates amid {worry}",
                "{company} shares jump after profit beats forecasts",
                "investors sell bonds as {worry}",
                "oil prices climb on {worry}",
                "{company} reports record quarterly revenue",
                "inflation slows, lifting the {index}",
                "the dollar weakens against the euro as {worry}",
                "{company} announces a stock buyback",
                "markets rally as {worry} eases",
            ],
            {
                "index": ["the Dow", "the Nasdaq", "the FTSE", "the Nikkei", "the S&P 500", "the DAX"],
                "worry": [
                    "inflation fears grow",
                    "recession fears grow",
                    "trade tensions rise",
                    "supply worries mount",
                    "rate hike fears return",
                ],
                "company": ["Tesla", "Amazon", "Shell", "Toyota", "Walmart", "Siemens"],
            },
        ),
        "娱乐": (
            [
                "{star} stars in a new {genre} film",
                "the {genre} movie tops the box office",
                "{star} wins best actor at the {award}",
                "{band} announces a world tour",
                "{band} releases a new album",
                "the {award} ceremony celebrates {genre} films",
                "{star} and {band} perform at the {award}",
                "streaming hit returns for a second season",
                "{star} to direct a {genre} movie",
                "fans queue overnight for the {band} concert",
                "critics praise the new {genre} series",
            ],
            {
                "star": ["Tom Hanks", "Zendaya", "Ryan Gosling", "Meryl Streep", "Keanu Reeves", "Emma Stone"],
                "genre": ["comedy", "horror", "science fiction", "romance", "action", "animated"],
                "award": ["Oscars", "Golden Globes", "Grammys", "Emmys", "festival"],
                "band": ["Coldplay", "BTS", "Taylor Swift", "Adele", "the Weeknd", "Beyonce"],
            },
        ),
    },
}


def fill(template: str, fillers: dict[str, list[str]], rng: random.Random) -> str:
    text = template
    for slot, options in fillers.items():
        text = text.replace("{" + slot + "}", rng.choice(options))
    return text[0].upper() + text[1:]


def examples(labels: dict[str, tuple[list[str], dict[str, list[str]]]], rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for label, (templates, fillers) in labels.items():
        seen: set[str] = set()
        for _ in range(PER_LABEL * 20):
            if len(seen) >= PER_LABEL:
                break
            seen.add(fill(rng.choice(templates), fillers, rng))
        rows += [(text, label) for text in sorted(seen)]
    rng.shuffle(rows)
    return rows


def main() -> None:
    for task, labels in TASKS.items():
        rows = examples(labels, random.Random(f"demo-{task}"))
        cut = int(len(rows) * 0.8)
        out = HERE / "datasets" / task
        out.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", rows[:cut]), ("test", rows[cut:])):
            with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "label"])
                writer.writerows(part)
        print(f"{task}: {cut} train, {len(rows) - cut} test, labels {list(labels)}")


if __name__ == "__main__":
    main()
