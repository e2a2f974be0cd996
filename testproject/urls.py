"""URLs of the demo site: the shop at ``/``, Django's auth views, the user's sessions page, the
admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.decorators.http import require_POST

urlpatterns = [
    path("", include("testproject.shop.urls")),
    # Log out by POST only, on every supported Django (4.2's LogoutView still accepts GET).
    path("accounts/logout/", require_POST(auth_views.LogoutView.as_view()), name="logout"),
    path("accounts/", include("django.contrib.auth.urls")),
    # Each user's own sessions: where they are logged in, and "log out everywhere else".
    path("account/sessions/", include("django_memsession.urls")),
    path("admin/", admin.site.urls),
]
