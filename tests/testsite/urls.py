from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("logout/", LogoutView.as_view(next_page="/session/read/"), name="logout"),
    path("session/make/", views.make_session, name="make-session"),
    path("session/read/", views.read_session, name="read-session"),
    path("session/step/", views.step, name="step-session"),
    path("session/slow-step/", views.slow_step, name="slow-step-session"),
    path("session/blob/", views.store_blob, name="blob-session"),
    path("session/stats/", views.store_stats, name="store-stats"),
    path("session/sign-in/", views.sign_in, name="sign-in-session"),
    path("session/sign-out/", views.sign_out, name="sign-out-session"),
    path("session/whoami/", views.whoami, name="whoami-session"),
]
