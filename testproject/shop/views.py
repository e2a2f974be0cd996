"""The shop's views: one page to look at the session, and POST-only views that change it."""

from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from testproject.shop import cart
from testproject.shop.catalogue import PRODUCTS, Product
from testproject.shop.forms import AddToCartForm

VISITS_KEY = "visits"

# choice -> (button label, argument to SessionBase.set_expiry)
EXPIRY_CHOICES: dict[str, tuple[str, int | None]] = {
    "browser-close": ("At browser close", 0),
    "five-minutes": ("In 5 minutes", 5 * 60),
    "default": ("Default (SESSION_COOKIE_AGE)", None),
}


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    session = request.session
    visits = session.get(VISITS_KEY, 0) + 1
    session[VISITS_KEY] = visits
    cart_lines = cart.lines(session)
    context = {
        "visits": visits,
        # A new session gets its key only when this response saves it.
        "session_key_prefix": (session.session_key or "")[:6],
        "expiry_age": session.get_expiry_age(),
        "expiry_date": session.get_expiry_date(),
        "expire_at_browser_close": session.get_expire_at_browser_close(),
        "session_engine": settings.SESSION_ENGINE,
        "expiry_choices": {choice: label for choice, (label, _) in EXPIRY_CHOICES.items()},
        "products": PRODUCTS.values(),
        "cart_lines": cart_lines,
        "cart_count": sum(line.quantity for line in cart_lines),
        "cart_total": sum((line.total for line in cart_lines), Decimal(0)),
    }
    return render(request, "shop/home.html", context)


def _product(slug: str) -> Product:
    try:
        return PRODUCTS[slug]
    except KeyError:
        raise Http404(f"No product {slug!r} in the catalogue.") from None


@require_POST
def cart_add(request: HttpRequest, slug: str) -> HttpResponse:
    product = _product(slug)
    form = AddToCartForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Choose a quantity from 1 to {cart.MAX_QUANTITY}.")
        return redirect("shop:home")
    quantity = form.cleaned_data["quantity"]
    in_cart = cart.add(request.session, product.slug, quantity)
    messages.success(request, f"Added {quantity} of {product.name}: {in_cart} in your cart.")
    return redirect("shop:home")


@require_POST
def cart_remove(request: HttpRequest, slug: str) -> HttpResponse:
    """Remove one of a product, or the whole line when the button sent ``quantity=all``."""
    product = _product(slug)
    quantity = None if request.POST.get("quantity") == "all" else 1
    left = cart.remove(request.session, product.slug, quantity)
    messages.success(request, f"Removed {product.name}: {left} left in your cart.")
    return redirect("shop:home")


@require_POST
def cart_clear(request: HttpRequest) -> HttpResponse:
    cart.clear(request.session)
    messages.success(request, "Your cart is empty.")
    return redirect("shop:home")


@require_POST
def set_expiry(request: HttpRequest) -> HttpResponse:
    choice = request.POST.get("expiry", "")
    if choice not in EXPIRY_CHOICES:
        messages.error(request, f"Pick one of: {', '.join(EXPIRY_CHOICES)}.")
        return redirect("shop:home")
    label, value = EXPIRY_CHOICES[choice]
    request.session.set_expiry(value)
    messages.success(request, f"Session expiry: {label.lower()}.")
    return redirect("shop:home")
