"""The products on sale. A real shop would read these from its own database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    price: str
    mark: str  # what the picture shows; text, so it needs no emoji font
    colour: str


PRODUCTS: tuple[Product, ...] = (
    Product("teapot", "Stoneware teapot", "€34", "Tp", "#f4e1c1"),
    Product("lamp", "Reading lamp", "€59", "Lm", "#fdf1b8"),
    Product("plant", "Monstera in a pot", "€27", "Pl", "#d5efd0"),
    Product("socks", "Wool socks", "€12", "Sk", "#f7d4dc"),
    Product("notebook", "Dotted notebook", "€9", "Nb", "#d9e4f5"),
    Product("mug", "Enamel mug", "€15", "Mg", "#e8dcd2"),
)

BY_ID = {p.id: p for p in PRODUCTS}
