"""URLs of the demo site: the shop at ``/``, Django's auth views, the admin."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("testproject.shop.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
