"""The cart, kept in the session as ``{product slug: quantity}`` (plain JSON)."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.sessions.backends.base import SessionBase

from testproject.shop.catalogue import PRODUCTS, Product

CART_KEY = "cart"
MAX_QUANTITY = 99  # per line: keeps one visitor's session small however often they click


@dataclass(frozen=True, slots=True)
class CartLine:
    product: Product
    quantity: int

    @property
    def total(self) -> Decimal:
        return self.product.price * self.quantity


def quantities(session: SessionBase) -> dict[str, int]:
    return dict(session.get(CART_KEY, {}))


def add(session: SessionBase, slug: str, quantity: int) -> int:
    """Add ``quantity`` of a product; return the quantity now in the cart."""
    cart = quantities(session)
    cart[slug] = min(cart.get(slug, 0) + quantity, MAX_QUANTITY)
    # Assign a new dict rather than mutating the stored one, so the session sees the change.
    session[CART_KEY] = cart
    return cart[slug]


def remove(session: SessionBase, slug: str, quantity: int | None) -> int:
    """Remove ``quantity`` of a product (all of it when None); return the quantity left."""
    cart = quantities(session)
    left = 0 if quantity is None else max(cart.get(slug, 0) - quantity, 0)
    if left:
        cart[slug] = left
    else:
        cart.pop(slug, None)
    session[CART_KEY] = cart
    return left


def clear(session: SessionBase) -> None:
    session.pop(CART_KEY, None)


def lines(session: SessionBase) -> list[CartLine]:
    """The cart's lines in catalogue order, skipping products no longer sold."""
    cart = quantities(session)
    return [CartLine(product, cart[slug]) for slug, product in PRODUCTS.items() if cart.get(slug)]
