from django.contrib import admin
from django.contrib.auth.views import (
    LoginView,
    LogoutView,
    PasswordChangeView,
    PasswordResetConfirmView,
)
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("account/sessions/", include("django_memsession.urls")),
    path("logout/", LogoutView.as_view(next_page="/session/read/"), name="logout"),
    # settings.LOGIN_URL's default; Django's password change (update_session_auth_hash).
    path(
        "accounts/login/",
        LoginView.as_view(template_name="admin/login.html", next_page="/account/sessions/"),
    ),
    path("accounts/password/", PasswordChangeView.as_view(success_url="/session/whoami/")),
    path("session/make/", views.make_session, name="make-session"),
    path("session/read/", views.read_session, name="read-session"),
    path("session/step/", views.step, name="step-session"),
    path("session/slow-step/", views.slow_step, name="slow-step-session"),
    path("session/blob/", views.store_blob, name="blob-session"),
    path("session/stats/", views.store_stats, name="store-stats"),
    path("session/cart/", views.add_to_cart),
    path("session/message/", views.post_message),
    path("session/cart-and-messages/", views.cart_and_messages),
    path("session/sign-in/", views.sign_in, name="sign-in-session"),
    path("session/sign-out/", views.sign_out, name="sign-out-session"),
    path("session/whoami/", views.whoami, name="whoami-session"),
    path("password/and-login/", views.new_password_and_login),
    path("password/only/", views.new_password_only),
    path("password/async/", views.new_password_async),
    path("password/hash-first/", views.new_password_hash_first),
    path("password/rolled-back/", views.new_password_rolled_back),
    path("password/another-thread/", views.new_password_on_another_thread),
    path(
        "accounts/reset/<uidb64>/<token>/",
        PasswordResetConfirmView.as_view(post_reset_login=True, success_url="/session/whoami/"),
    ),
]
