from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("session/make/", views.make_session, name="make-session"),
    path("session/stats/", views.store_stats, name="store-stats"),
]
