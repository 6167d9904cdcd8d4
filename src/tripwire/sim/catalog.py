"""The product catalog: ASIN-like ids, categories, prices and Zipf popularity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = ("electronics", "grocery", "household", "books", "toys", "beauty", "fashion", "home")
CATEGORY_SHARES = (0.16, 0.18, 0.16, 0.1, 0.08, 0.1, 0.1, 0.12)
_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
#: Zipf exponent of product popularity.
POPULARITY_EXPONENT = 1.05


@dataclass(frozen=True)
class Catalog:
    """Products as parallel arrays; ``popularity`` sums to 1."""

    product_ids: np.ndarray  # str objects
    category: np.ndarray  # str objects
    price: np.ndarray  # float, USD
    popularity: np.ndarray
    cdf: np.ndarray

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` product indices by popularity."""
        index = np.searchsorted(self.cdf, rng.random(n), side="right")
        return index.clip(0, self.product_ids.size - 1)


def build_catalog(rng: np.random.Generator, size: int = 5000) -> Catalog:
    """Draw a catalog of ``size`` products."""
    letters = _ALPHABET[rng.integers(0, _ALPHABET.size, size=(size, 8))]
    ids = np.array(["B0" + "".join(row) for row in letters.tolist()], dtype=object)
    shares = np.asarray(CATEGORY_SHARES) / np.sum(CATEGORY_SHARES)
    category = np.array(CATEGORIES, dtype=object)[rng.choice(len(CATEGORIES), size=size, p=shares)]
    price = np.round(np.exp(rng.normal(np.log(24.0), 0.85, size)), 2).clip(0.99, 2500.0)
    weights = 1.0 / np.arange(1, size + 1) ** POPULARITY_EXPONENT
    popularity = weights / weights.sum()
    return Catalog(ids, category, price, popularity, np.cumsum(popularity))
