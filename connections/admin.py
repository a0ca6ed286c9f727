"""Admin page of live connections across every instance (docs/rest-api.md#admin).

Live connections are not rows in the database: they live in the registry (Redis, or this
process's memory in the embedded default). So there is no ModelAdmin; the page is a plain view
wrapped in ``admin.site.admin_view`` (staff only, the admin's login and chrome), mounted at
``/admin/connections/live/`` by ``connections.admin_urls`` and linked from the admin index.

Disconnecting a user sends one control message to their group ``user.<id>``
(``connections.control``); the channel layer carries it to every instance holding one of their
sockets, and each socket closes with 4401. A client may reconnect at once with the same token;
"revoke and disconnect" deletes the user's tokens first, so it cannot (docs/auth.md).

Being staff is not enough: the page needs ``connections.view_live_connections`` and its
actions ``connections.disconnect_live_connections`` (``connections.models.LiveConnection``),
and no one but a superuser acts on a superuser, here or on a superuser's API tokens.

API tokens (``accounts.models.AuthToken``) have a plain ModelAdmin in ``accounts.admin``:
deleting one there closes its sockets like a logout does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.admin import may_act_on
from accounts.models import AuthToken
from connections.control import sockets_close, sockets_revoke_on_commit
from connections.registry import ConnectionInfo, get_registry
from realtime_project.close_codes import WS_4401_UNAUTHORIZED

# The page is for looking at, not for exporting: past this many rows, filter.
MAX_ROWS = 500

VIEW_PERMISSION = "connections.view_live_connections"
DISCONNECT_PERMISSION = "connections.disconnect_live_connections"


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


# A link to the page on the admin index, without replacing Django's own index template.
admin.site.index_template = "connections/admin_index.html"


@dataclass(frozen=True)
class LiveConnections:
    rows: list[ConnectionInfo]
    instances: list[dict[str, Any]]
    truncated: bool


async def live_connections_list(
    *, user_id: str | None = None, instance_id: str | None = None, limit: int = MAX_ROWS
) -> LiveConnections:
    """Live connections, optionally of one user and/or one instance, oldest first."""
    registry = get_registry()
    stats = await registry.stats()
    instances = list(stats["instances"])
    if user_id is not None:
        rows = await registry.user_connections(user_id)
        if instance_id is not None:
            rows = [c for c in rows if c.instance_id == instance_id]
    else:
        wanted = [i["instance_id"] for i in instances if i.get("status") == "alive"]
        if instance_id is not None:
            wanted = [iid for iid in wanted if iid == instance_id]
        per_instance = await asyncio.gather(*(registry.instance_connections(i) for i in wanted))
        rows = [c for batch in per_instance for c in batch]
    rows.sort(key=lambda c: (c.connected_at, c.connection_id))
    return LiveConnections(rows=rows[:limit], instances=instances, truncated=len(rows) > limit)


async def user_sockets_close(*, user_id: str) -> None:
    """Close every socket of ``user_id`` on every instance (4401: sign in again)."""
    await sockets_close(user_id=user_id, code=WS_4401_UNAUTHORIZED)


@transaction.atomic
def user_tokens_revoke(*, user_id: str) -> int:
    """Delete every token of ``user_id`` and close all their sockets; how many tokens."""
    tokens = list(AuthToken.objects.filter(user_id=user_id))
    for token in tokens:
        token.delete()  # each deletion revokes that token's sockets after commit
    # Session-authenticated sockets hold no token: close every socket of the user too.
    sockets_revoke_on_commit(user_id=user_id, token_hash=None)
    return len(tokens)


def _resolve_user_id(raw: str) -> str | None:
    """A user filter may be an id or a username; ``None`` when it names nobody."""
    user_model = get_user_model()
    if raw.isdigit():
        return raw
    pk = user_model.objects.filter(**{user_model.USERNAME_FIELD: raw}).values_list("pk", flat=True)
    found = list(pk[:1])
    return str(found[0]) if found else None


@require_GET
def live_connections_view(request: HttpRequest) -> HttpResponse:
    _require(request, VIEW_PERMISSION)
    user_filter = request.GET.get("user", "").strip()
    instance_filter = request.GET.get("instance", "").strip() or None
    user_id = _resolve_user_id(user_filter) if user_filter else None
    if user_filter and user_id is None:
        result = LiveConnections(rows=[], instances=[], truncated=False)
        messages.warning(request, f"No user named {user_filter!r}.")
    else:
        result = async_to_sync(live_connections_list)(user_id=user_id, instance_id=instance_filter)
    user_ids = {int(c.user_id) for c in result.rows if c.user_id.isdigit()}
    names = {
        str(pk): name
        for pk, name in get_user_model()
        .objects.filter(pk__in=user_ids)
        .values_list("pk", get_user_model().USERNAME_FIELD)
    }
    rows = [{"info": c, "username": names.get(c.user_id, "")} for c in result.rows]
    context = {
        **admin.site.each_context(request),
        "title": "Live connections",
        "rows": rows,
        "instances": result.instances,
        "truncated": result.truncated,
        "max_rows": MAX_ROWS,
        "user_filter": user_filter,
        "instance_filter": instance_filter or "",
        "may_disconnect": request.user.has_perm(DISCONNECT_PERMISSION),
    }
    return render(request, "connections/live_connections.html", context)


def _user_and_target(request: HttpRequest) -> tuple[str, str]:
    """The posted user id, and where to send the admin back (the live page, filters kept).

    Refuses (403) a caller without the disconnect permission, or a non-superuser naming a
    superuser.
    """
    _require(request, DISCONNECT_PERMISSION)
    target = reverse("admin-live-connections")
    back = request.POST.get("next", "")
    user_id = request.POST.get("user_id", "").strip()
    if user_id.isdigit() and not may_act_on(request, user_id):
        raise PermissionDenied
    return user_id, back if back.startswith(target) else target


@require_POST
def disconnect_user_view(request: HttpRequest) -> HttpResponse:
    user_id, target = _user_and_target(request)
    if not user_id.isdigit():
        messages.error(request, "Choose a user to disconnect.")
        return HttpResponseRedirect(target)
    async_to_sync(user_sockets_close)(user_id=user_id)
    messages.success(request, f"Asked every instance to close user {user_id}'s sockets (4401).")
    return HttpResponseRedirect(target)


@require_POST
def revoke_user_view(request: HttpRequest) -> HttpResponse:
    user_id, target = _user_and_target(request)
    if not user_id.isdigit():
        messages.error(request, "Choose a user to revoke.")
        return HttpResponseRedirect(target)
    count = user_tokens_revoke(user_id=user_id)
    messages.success(
        request,
        f"Revoked {count} token(s) of user {user_id} and asked every instance to close "
        "their sockets (4401).",
    )
    return HttpResponseRedirect(target)
