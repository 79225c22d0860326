"""SYNTHETIC price data for the embedded default: product descriptions whose price follows a
hidden, learnable rule (category × brand tier × size × features). Not real products or prices."""
import json
import random
from pathlib import Path

PROMPT_PREFIX = "How much does this cost to the nearest dollar?\n\n"
PROMPT_SUFFIX = "\n\nPrice is $"

CATEGORIES = {  # base price in dollars for a standard-tier, standard-size item
    "usb cable": 9, "phone case": 15, "coffee mug": 12, "desk lamp": 35, "backpack": 60,
    "headphones": 80, "blender": 95, "smart watch": 220, "office chair": 180, "monitor": 250,
    "espresso machine": 400, "laptop": 900,
}
TIERS = {"budget": 0.6, "standard": 1.0, "premium": 1.8}
BRANDS = {
    "budget": ["Valuo", "Basix", "Thrifta"],
    "standard": ["Nordex", "Brightway", "Solano"],
    "premium": ["Aurelia", "Lumina", "Regalis"],
}
SIZES = {"compact": 0.85, "standard": 1.0, "large": 1.25}
FEATURES = ["waterproof", "wireless", "rechargeable", "stainless steel", "two-year warranty",
            "energy saving", "foldable", "touch controls", "extra quiet", "gift box"]


def make_item(rng: random.Random) -> tuple[str, int]:
    """One synthetic product: (description, price in whole dollars)."""
    category = rng.choice(list(CATEGORIES))
    tier = rng.choice(list(TIERS))
    size = rng.choice(list(SIZES))
    features = rng.sample(FEATURES, rng.randint(0, 4))
    # Each feature adds 8%: the model has to count them, not only spot the category.
    price = CATEGORIES[category] * TIERS[tier] * SIZES[size] * (1 + 0.08 * len(features))
    lines = [
        f"Title: {rng.choice(BRANDS[tier])} {size} {category}",
        f"Brand tier: {tier}",
        f"Features: {', '.join(features) if features else 'none'}",
        f"Color: {rng.choice(['black', 'white', 'grey', 'blue', 'red', 'green'])}",
    ]
    return "\n".join(lines), max(1, round(price))


def price_rows(n: int, seed: int) -> list[dict]:
    """Prompt/completion rows in the seed course's price-prediction format."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        description, price = make_item(rng)
        rows.append({"prompt": PROMPT_PREFIX + description + PROMPT_SUFFIX,
                     "completion": f"{price}.00"})
    return rows


TIER_QUESTION = "Which brand tier and product category is this?"


def tier_rows(n: int, seed: int) -> list[dict]:
    """Chat rows (a `messages` column) for the second demo task: name the brand tier and category
    of a product whose listing leaves the tier out, so the model has to know the brands."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        description, _ = make_item(rng)
        lines = description.splitlines()
        tier = lines[1].removeprefix("Brand tier: ")
        category = next(c for c in CATEGORIES if lines[0].endswith(c))
        listing = "\n".join(line for line in lines if not line.startswith("Brand tier:"))
        rows.append({"messages": [{"role": "user", "content": f"{TIER_QUESTION}\n\n{listing}"},
                                  {"role": "assistant", "content": f"{tier} {category}"}]})
    return rows


def pretraining_texts(n: int, seed: int) -> list[str]:
    """Plain text for pretraining the tiny base model: the same products in other phrasings,
    so fine-tuning has to adapt it to the prompt format rather than learn language from zero."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        description, price = make_item(rng)
        if i % 2:
            texts.append(f"{description}\nThis item sells for about {price} dollars.")
        else:
            texts.append(f"Product listing.\n{description}")
    return texts


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
