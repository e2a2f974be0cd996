"""The admin stats page: every live process's store at a glance, its history, "Prune now"; a
user's sessions across processes (find, end one, end all); and the "Log out everywhere" action on
the admin's user list.

The page lives where the admin puts the (table-less) ``Stats`` model's changelist,
``/admin/django_memsession/stats/``, so it is listed on the admin index and guarded by the
model's permissions: ``view`` to see it (and its JSON), ``change`` to prune. Figures come from
every process of the project through the control channel (``runtime.gather``), or from this
process alone where the channel is off. Everything shown is read from typed
:class:`~django_memsession.messages.ProcessReport` fields.

On the Redis engine the page shows Redis's own figures (read by this process from Redis, see
``redis/info.py``; a clear message instead when Redis does not answer) above each process's
(hits, misses, latency, through the control channel, which needs no Redis), and the history of
Redis's figures. "Prune now" runs there what ``clearsessions`` runs: the engine's
``clear_expired()`` (Redis expires sessions itself).
"""

from __future__ import annotations

import datetime
from dataclasses import asdict
from importlib import import_module
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import engines, everywhere, runtime
from .logged_in import user_id
from .messages import (
    Gathered,
    NearCacheStats,
    PassReport,
    ProcessReport,
    Sample,
    SnapshotReport,
    split_warning,
)
from .models import Stats
from .pages import session_row

PLOT_WIDTH, PLOT_HEIGHT = 640, 160
PLOT_MARGIN_LEFT, PLOT_MARGIN_RIGHT, PLOT_MARGIN_Y = 70, 60, 14


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _when(timestamp: float | None) -> datetime.datetime | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


def _past_run(run: PassReport | SnapshotReport, **figures: Any) -> dict[str, Any]:
    """A past prune pass or snapshot as the page shows it: when it began, how long it took (ms)
    and its own ``figures``."""
    return {
        "time": run.started_at,
        "when": _when(run.started_at),
        "duration_ms": round(run.duration * 1000, 1),
        **figures,
    }


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days} d"] if days else []
    if days or hours:
        parts.append(f"{hours} h")
    if not days:
        parts.append(f"{minutes} min")
    if not days and not hours:
        parts.append(f"{seconds} s")
    return " ".join(parts)


def process_row(report: ProcessReport) -> dict[str, Any]:
    """One process's figures, shaped for the template (and the JSON view)."""
    stats, pruner = report.stats, report.pruner
    assert stats is not None and pruner is not None  # a memory-engine process
    max_bytes = stats.max_bytes
    last = pruner.last_pass
    return {
        "pid": report.pid,
        "uptime": report.uptime,
        "uptime_display": _duration(report.uptime),
        "entries": stats.entries,
        "users": stats.users,
        "bytes": stats.bytes,
        "max_bytes": max_bytes,
        "low_water_bytes": stats.low_water_bytes,
        "used_percent": round(100 * stats.bytes / max_bytes, 1) if max_bytes else 0.0,
        "low_water_percent": round(100 * stats.low_water_bytes / max_bytes, 1)
        if max_bytes
        else 0.0,
        "hits": stats.hits,
        "misses": stats.misses,
        "hit_ratio": _ratio(stats.hits, stats.hits + stats.misses),
        "evictions": stats.evictions,
        "expired": stats.expired,
        "restored": stats.restored,
        "merged": stats.merged,
        "conflicts": stats.conflicts,
        "pruner_alive": pruner.alive,
        "pruner_interval": pruner.interval,
        "last_pass": None
        if last is None
        else _past_run(last, removed=last.removed, bytes_freed=last.bytes_freed),
        "plot": history_plot(report.history, max_bytes),
        "snapshot": snapshot_row(report),
    }


def snapshot_row(report: ProcessReport) -> dict[str, Any] | None:
    """The last snapshot written and what was restored at start (None: snapshots off)."""
    state = report.snapshot
    if state is None:
        return None
    last, restored = state.last, state.restored
    return {
        "path": state.path,
        "owner": state.owner,
        "holder": state.holder,
        "failures": state.failures,
        "last": None
        if last is None
        else _past_run(last, sessions=last.sessions, bytes=last.bytes, reason=last.reason),
        "restored": None
        if restored is None
        else {
            "time": restored.at,
            "sessions": restored.sessions,
            "expired": restored.expired,
            "journaled": restored.journaled,
            "left_out": restored.left_out,
        },
    }


def redis_process_row(report: ProcessReport) -> dict[str, Any]:
    """One process's own figures on the Redis engine, for the template (and the JSON view)."""
    figures = report.redis
    assert figures is not None
    return {
        "pid": report.pid,
        "uptime": report.uptime,
        "uptime_display": _duration(report.uptime),
        "hits": figures.hits,
        "misses": figures.misses,
        "hit_ratio": _ratio(figures.hits, figures.hits + figures.misses),
        "round_trips": figures.round_trips,
        "latency_samples": figures.latency_samples,
        "latency_p50_ms": figures.latency_p50_ms,
        "latency_p99_ms": figures.latency_p99_ms,
        "sample_interval": figures.sample_interval,
        "sample_failures": figures.sample_failures,
        "samples": len(report.history),
        "near": _near_row(figures.near),
    }


NEAR_COUNTS = ("l1_hits", "l2_hits", "misses", "invalidations")


def _near_row(near: NearCacheStats | None) -> dict[str, Any] | None:
    """A process's near cache figures with the share of its loads each answer had."""
    if near is None:
        return None
    row: dict[str, Any] = asdict(near)
    loads = near.l1_hits + near.l2_hits + near.misses
    for key in ("l1_hits", "l2_hits", "misses"):
        row[f"{key}_rate"] = _ratio(row[key], loads)
    return row


def redis_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summed = {key: sum(row[key] for row in rows) for key in ("hits", "misses", "round_trips")}
    summed["hit_ratio"] = _ratio(summed["hits"], summed["hits"] + summed["misses"])
    summed["processes"] = len(rows)
    near = [row["near"] for row in rows if row["near"] is not None]
    summed["near"] = None
    if near:
        counts = {key: sum(row[key] for row in near) for key in NEAR_COUNTS}
        loads = counts["l1_hits"] + counts["l2_hits"] + counts["misses"]
        for key in ("l1_hits", "l2_hits", "misses"):
            counts[f"{key}_rate"] = _ratio(counts[key], loads)
        summed["near"] = counts
    return summed


def redis_history_plot(
    reports: list[ProcessReport], server: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Redis's history, from the process that holds the longest (each samples the same Redis):
    used memory against ``maxmemory`` (or its peak, without a limit), and sessions stored."""
    histories = [report.history for report in reports]
    history = max(histories, key=len, default=[])
    if len(history) < 2:
        return None
    limit = server["maxmemory"] if server is not None else 0
    return history_plot(history, limit or max(sample.bytes for sample in history))


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summed = {
        key: sum(row[key] for row in rows)
        # users: summed, so a user logged in in two processes counts twice
        for key in (
            "entries",
            "users",
            "bytes",
            "max_bytes",
            "hits",
            "misses",
            "evictions",
            "expired",
            "merged",
            "conflicts",
        )
    }
    summed["hit_ratio"] = _ratio(summed["hits"], summed["hits"] + summed["misses"])
    summed["used_percent"] = (
        round(100 * summed["bytes"] / summed["max_bytes"], 1) if summed["max_bytes"] else 0.0
    )
    summed["processes"] = len(rows)
    return summed


def history_plot(history: list[Sample], max_bytes: int) -> dict[str, Any] | None:
    """Polylines for bytes (against the budget) and entries over time; None under 2 samples.

    Drawn on the server as inline SVG: no JavaScript, no CDN, readable as plain markup.
    """
    if len(history) < 2:
        return None
    start, end = history[0].time, history[-1].time
    span = (end - start) or 1.0
    top_entries = max(max(sample.entries for sample in history), 1)
    inner_width = PLOT_WIDTH - PLOT_MARGIN_LEFT - PLOT_MARGIN_RIGHT
    inner_height = PLOT_HEIGHT - 2 * PLOT_MARGIN_Y

    def x(sample: Sample) -> float:
        return PLOT_MARGIN_LEFT + inner_width * (sample.time - start) / span

    def y(fraction: float) -> float:
        return PLOT_MARGIN_Y + inner_height * (1 - min(max(fraction, 0.0), 1.0))

    bytes_points = " ".join(
        f"{x(s):.1f},{y(s.bytes / max_bytes if max_bytes else 0):.1f}" for s in history
    )
    entries_points = " ".join(f"{x(s):.1f},{y(s.entries / top_entries):.1f}" for s in history)
    peak_bytes = max(sample.bytes for sample in history)
    return {
        "width": PLOT_WIDTH,
        "height": PLOT_HEIGHT,
        "left": PLOT_MARGIN_LEFT,
        "right": PLOT_WIDTH - PLOT_MARGIN_RIGHT,
        "top": PLOT_MARGIN_Y,
        "bottom": PLOT_HEIGHT - PLOT_MARGIN_Y,
        "label_y": PLOT_HEIGHT - 2,
        "bytes_points": bytes_points,
        "entries_points": entries_points,
        "max_bytes": max_bytes,
        "top_entries": top_entries,
        "peak_bytes": peak_bytes,
        "samples": len(history),
        "start": _when(start),
        "end": _when(end),
    }


@admin.register(Stats)
class StatsAdmin(admin.ModelAdmin):
    """No add, change or delete of rows: the changelist *is* the stats page."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.stats_view), name=f"{prefix}_changelist"),
            path("json/", wrap(self.json_view), name=f"{prefix}_json"),
            path("prune/", wrap(self.prune_view), name=f"{prefix}_prune"),
            path("users/", wrap(self.user_view), name=f"{prefix}_user"),
            path("users/end/", wrap(self.end_view), name=f"{prefix}_end"),
        ]

    def _gather(self, request: HttpRequest) -> tuple[Gathered, list[dict[str, Any]]]:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        gathered = runtime.gather("report")
        return gathered, [process_row(report) for report in gathered.processes]

    def _redis_context(self, request: HttpRequest) -> dict[str, Any]:
        """What the page shows on the Redis engine: Redis's figures (or why there are none),
        and each process's own. A process still on the memory engine (a move in progress) is
        named apart."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        gathered = runtime.gather("report")
        server, redis_problem = engines.current().server_figures()
        if server is not None:
            server["uptime_display"] = _duration(server["uptime"])
        on_redis = [report for report in gathered.processes if report.redis is not None]
        rows = [redis_process_row(report) for report in on_redis]
        return {
            "redis": server,
            "redis_problem": redis_problem,
            "processes": rows,
            "totals": redis_totals(rows),
            "plot": redis_history_plot(on_redis, server),
            "other_engine": [r.pid for r in gathered.processes if r.redis is None],
            "errors": gathered.errors,
            "problem": gathered.problem,
            "channel_on": gathered.channel_on,
        }

    def stats_view(self, request: HttpRequest) -> HttpResponse:
        if engines.current().shared:
            return self._redis_stats_view(request)
        gathered, rows = self._gather(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Session store",
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "processes": rows,
            "totals": totals(rows),
            "errors": gathered.errors,
            "split": gathered.split,
            "split_warning": split_warning(len(rows)),
            "problem": gathered.problem,
            "channel_on": gathered.channel_on,
            "can_prune": self.has_change_permission(request),
            "prune_url": reverse(f"{self.admin_site.name}:django_memsession_stats_prune"),
            "json_url": reverse(f"{self.admin_site.name}:django_memsession_stats_json"),
            "user_url": reverse(f"{self.admin_site.name}:django_memsession_stats_user"),
            "now": timezone.now(),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "django_memsession/stats.html", context)

    def _redis_stats_view(self, request: HttpRequest) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            **self._redis_context(request),
            "title": "Session store",
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "can_prune": self.has_change_permission(request),
            "prune_url": reverse(f"{self.admin_site.name}:django_memsession_stats_prune"),
            "json_url": reverse(f"{self.admin_site.name}:django_memsession_stats_json"),
            "user_url": reverse(f"{self.admin_site.name}:django_memsession_stats_user"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "django_memsession/redis_stats.html", context)

    def json_view(self, request: HttpRequest) -> JsonResponse:
        engine = engines.current()
        if engine.shared:
            context = self._redis_context(request)
            context.pop("plot")
            return JsonResponse({"engine": engine.name, **context})
        gathered, rows = self._gather(request)
        for row in rows:
            row.pop("plot")
            if row["last_pass"]:
                row["last_pass"].pop("when")
            if row["snapshot"] and row["snapshot"]["last"]:
                row["snapshot"]["last"].pop("when")
        return JsonResponse(
            {
                "processes": rows,
                "totals": totals(rows),
                "split": gathered.split,
                "channel_on": gathered.channel_on,
                "problem": gathered.problem,
                "errors": gathered.errors,
            }
        )

    def prune_view(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._prune)(request)

    def _prune(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        if engines.current().shared:
            self._prune_redis(request)
            return HttpResponseRedirect(
                reverse(f"{self.admin_site.name}:django_memsession_stats_changelist")
            )
        gathered = runtime.gather("prune")
        removed_total = freed_total = 0
        for report in gathered.processes:
            result = report.result
            if result is None:
                continue
            removed_total += result.removed
            freed_total += result.bytes_freed
            messages.info(
                request,
                f"Process {report.pid}: removed {result.removed} sessions "
                f"({filesizeformat(result.bytes_freed)}); "
                f"{report.stats.entries if report.stats else '?'} left.",
            )
        messages.success(
            request,
            f"Pruned {len(gathered.processes)} process(es): removed {removed_total} sessions "
            f"({filesizeformat(freed_total)}) in total.",
        )
        if gathered.problem:
            messages.error(request, f"The control channel could not be used: {gathered.problem}")
        for error in gathered.errors:
            messages.error(request, error)
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:django_memsession_stats_changelist")
        )

    def _prune_redis(self, request: HttpRequest) -> None:
        try:
            clean_redis()
        except Exception as exc:
            # SessionBackendUnavailable's text says why Redis cannot answer; never a key.
            messages.error(request, f"Redis could not be cleaned now: {exc}")
            return
        messages.success(
            request,
            "Redis removes expired sessions itself (each has a TTL); the engine's clean-up "
            "(clear_expired, what clearsessions and prunesessions run) has run.",
        )

    # -- a user's sessions ---------------------------------------------------------------------

    def user_view(self, request: HttpRequest) -> HttpResponse:
        """Find a user (username or primary key) and list their sessions in every process."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        query = request.GET.get("q", "").strip()
        user = find_user(query) if query else None
        sessions = everywhere.user_sessions(user) if user is not None else []
        context = {
            **self.admin_site.each_context(request),
            "title": f"Sessions of {user}" if user is not None else "Find a user's sessions",
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "query": query,
            "found": user,
            "found_pk": None if user is None else user_id(user),
            "sessions": [session_row(record, None) for record in sessions],
            "can_end": self.has_change_permission(request),
            "end_url": reverse(f"{self.admin_site.name}:django_memsession_stats_end"),
            "stats_url": reverse(f"{self.admin_site.name}:django_memsession_stats_changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "django_memsession/admin_user_sessions.html", context)

    def end_view(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._end)(request)

    def _end(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        user = find_user(request.POST.get("user", ""), by_pk_only=True)
        if user is None:
            raise Http404("No such user.")
        uid = user_id(user)
        keep = request.session if user_id(request.user) == uid else None
        session = request.POST.get("session")
        if session:
            ended = everywhere.end_session(user, session, by=request.user, reason="admin")
        else:
            ended = everywhere.end_user_sessions(user, keep=keep, by=request.user, reason="admin")
        messages.success(request, f"Ended {ended} session(s) of {user}.")
        url = reverse(f"{self.admin_site.name}:django_memsession_stats_user")
        return HttpResponseRedirect(f"{url}?{urlencode({'q': uid})}")


def clean_redis() -> None:
    """What "Prune now" runs on the Redis engine: what ``clearsessions`` runs, the configured
    engine's ``clear_expired()``. One call, to point at the Redis clean-up of
    ``prunesessions`` once it does more."""
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()


def find_user(query: str, *, by_pk_only: bool = False) -> Any:
    """The user whose username (or, failing that, primary key) is ``query``; None if none."""
    model = get_user_model()
    manager = model._default_manager
    if not by_pk_only:
        try:
            return manager.get_by_natural_key(query)
        except (model.DoesNotExist, ValueError, TypeError):
            pass
    try:
        return manager.filter(pk=query).first()
    except (ValueError, TypeError, ValidationError):
        return None


# -- "Log out everywhere" on the admin's user list -------------------------------------------------


@admin.action(description="Log out everywhere", permissions=["change"])
def logout_everywhere(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> None:
    """End every session of each selected user in every process (but the admin's own current
    session, if they selected themselves)."""
    me = user_id(request.user)
    ended = users = 0
    for user in queryset:
        keep = request.session if user_id(user) == me else None
        ended += everywhere.end_user_sessions(user, keep=keep, by=request.user, reason="admin")
        users += 1
    modeladmin.message_user(
        request, f"Ended {ended} session(s) of {users} user(s) in every process."
    )


def add_logout_everywhere(site: admin.AdminSite | None = None) -> bool:
    """Add "Log out everywhere" to the actions of whatever admin class is registered for the
    user model (Django's ``UserAdmin`` or a project's own); whether it was added. Called from
    ``apps.ready()``: list ``django_memsession`` after the app that registers the user admin.
    An admin class with ``actions = None`` (actions off) is left alone."""
    site = site or admin.site
    model_admin = site._registry.get(get_user_model())
    if model_admin is None or model_admin.actions is None:
        return False
    actions = list(model_admin.actions)
    if logout_everywhere not in actions:
        model_admin.actions = [*actions, logout_everywhere]
    return True
