from django.urls import path

from testproject.shop import views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("cart/<slug:slug>/add/", views.cart_add, name="cart-add"),
    path("cart/<slug:slug>/remove/", views.cart_remove, name="cart-remove"),
    path("cart/clear/", views.cart_clear, name="cart-clear"),
    path("session/expiry/", views.set_expiry, name="set-expiry"),
]
