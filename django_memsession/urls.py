"""``path("account/sessions/", include("django_memsession.urls"))``: a user's own sessions."""

from django.urls import path

from .pages import sessions_view

app_name = "django_memsession"

urlpatterns = [
    path("", sessions_view, name="user_sessions"),
]
