"""The fixed catalogue the demo sells from: no models, no database."""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Product:
    slug: str
    name: str
    price: Decimal


PRODUCTS: dict[str, Product] = {
    product.slug: product
    for product in [
        Product("tea", "Green tea, 100 g", Decimal("4.50")),
        Product("coffee", "Coffee beans, 250 g", Decimal("7.90")),
        Product("mug", "Enamel mug", Decimal("9.00")),
        Product("biscuits", "Oat biscuits", Decimal("2.80")),
        Product("teapot", "Cast-iron teapot", Decimal("34.00")),
    ]
}
