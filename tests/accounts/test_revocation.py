"""Every way a user's authority ends closes their live sockets with 4401 within 2 s.

A password change (tokens and session sockets alike), a session that ends (logout, flush,
expiry), and a bulk ``QuerySet.update`` that no signal announces.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from accounts.authority import authority_read
from accounts.models import AuthToken
from accounts.tokens import token_lookup
from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.tokens import token_issued
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN_SECONDS = 2.0
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


async def _connected(open_socket, user, *, token: str | None = None, cookie: str | None = None):
    if cookie is not None:
        socket = await open_socket(
            None, headers=[(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode())]
        )
    else:
        socket = await open_socket(user, token=token if token is not None else user.token)
    await socket.recv_until(frame_is("connected"))
    return socket


@sync_to_async
def _logged_in(user_id: str) -> Client:
    """A browser session of the user (the admin, the browsable API)."""
    client = Client()
    client.force_login(get_user_model().objects.get(pk=user_id))
    return client


def _session_key(client: Client) -> str:
    return str(client.cookies[django_settings.SESSION_COOKIE_NAME].value)


@sync_to_async
def _password_changed(user_id: str) -> None:
    user = get_user_model().objects.get(pk=user_id)
    user.set_password("a-new-password")
    user.save()


# -- a password change ------------------------------------------------------------------------


async def test_a_password_change_revokes_every_token_and_closes_every_socket(
    open_socket, demo: Demo, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = FAST_HASHERS
    second = await token_issued(demo.alice.id)
    browser = await _logged_in(demo.alice.id)
    sockets = [
        await _connected(open_socket, demo.alice),
        await _connected(open_socket, demo.alice, token=second),
        await _connected(open_socket, demo.alice, cookie=_session_key(browser)),
    ]
    bob = await _connected(open_socket, demo.bob)
    await _password_changed(demo.alice.id)
    for socket in sockets:
        assert await socket.wait_closed(within=WITHIN_SECONDS) == WS_4401_UNAUTHORIZED
    for key in (demo.alice.token, second):
        assert await sync_to_async(token_lookup)(key) is None  # REST answers 401
        again = await open_socket(demo.alice, token=key)
        assert await again.wait_closed() == WS_4401_UNAUTHORIZED
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_saving_a_user_without_changing_the_password_revokes_nothing(
    open_socket, demo: Demo
) -> None:
    socket = await _connected(open_socket, demo.alice)
    user = await get_user_model().objects.aget(pk=demo.alice.id)
    user.first_name = "Alice"
    await user.asave()
    user.last_login = timezone.now()
    await user.asave(update_fields=["last_login"])
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    assert await AuthToken.objects.filter(user_id=demo.alice.id).acount() == 1


async def test_a_password_changed_behind_the_signals_back_closes_session_sockets(
    open_socket, demo: Demo
) -> None:
    browser = await _logged_in(demo.bob.id)
    socket = await _connected(open_socket, demo.bob, cookie=_session_key(browser))
    # The session's auth hash no longer matches: Django would refuse the cookie now.
    await get_user_model().objects.filter(pk=demo.bob.id).aupdate(password="md5$x$y")
    assert await socket.wait_closed(within=WITHIN_SECONDS) == WS_4401_UNAUTHORIZED


# -- a session that ends ----------------------------------------------------------------------


async def test_logging_out_closes_the_sockets_opened_with_that_session_only(
    open_socket, demo: Demo
) -> None:
    browser = await _logged_in(demo.alice.id)
    other_browser = await _logged_in(demo.alice.id)
    doomed = await _connected(open_socket, demo.alice, cookie=_session_key(browser))
    kept = await _connected(open_socket, demo.alice, cookie=_session_key(other_browser))
    by_token = await _connected(open_socket, demo.alice)
    key = _session_key(browser)
    await sync_to_async(browser.logout)()
    assert await doomed.wait_closed(within=WITHIN_SECONDS) == WS_4401_UNAUTHORIZED
    for socket in (kept, by_token):
        assert (await socket.request({"type": "ping"}))["type"] == "pong"
    again = await open_socket(None, headers=[(b"cookie", f"sessionid={key}".encode())])
    assert await again.wait_closed() == WS_4401_UNAUTHORIZED


async def test_flushing_a_session_closes_its_sockets(open_socket, demo: Demo) -> None:
    browser = await _logged_in(demo.bob.id)
    socket = await _connected(open_socket, demo.bob, cookie=_session_key(browser))
    await sync_to_async(browser.session.flush)()
    assert await socket.wait_closed(within=WITHIN_SECONDS) == WS_4401_UNAUTHORIZED


async def test_a_session_expiring_while_its_socket_is_open_closes_it(
    open_socket, demo: Demo
) -> None:
    browser = await _logged_in(demo.carol.id)
    key = _session_key(browser)
    # Far enough ahead that a slow handshake on a busy machine still finds it valid.
    lifetime = 3.0
    await Session.objects.filter(session_key=key).aupdate(
        expire_date=timezone.now() + timedelta(seconds=lifetime)
    )
    socket = await _connected(open_socket, demo.carol, cookie=key)
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    assert await socket.wait_closed(within=lifetime + WITHIN_SECONDS) == WS_4401_UNAUTHORIZED


async def test_a_session_extended_by_a_later_request_keeps_its_socket(
    open_socket, demo: Demo
) -> None:
    browser = await _logged_in(demo.carol.id)
    key = _session_key(browser)
    soon = timezone.now() + timedelta(seconds=3)
    await Session.objects.filter(session_key=key).aupdate(expire_date=soon)
    socket = await _connected(open_socket, demo.carol, cookie=key)
    # A later request pushed the expiry back (SESSION_SAVE_EVERY_REQUEST, set_expiry).
    await Session.objects.filter(session_key=key).aupdate(
        expire_date=timezone.now() + timedelta(hours=1)
    )
    await async_wait_until(lambda: timezone.now() > soon + timedelta(seconds=1.5), what="expiry")
    assert (await socket.request({"type": "ping"}))["type"] == "pong"


# -- what no signal announces -----------------------------------------------------------------


async def test_a_bulk_deactivation_closes_sockets_within_two_seconds(
    open_socket, demo: Demo
) -> None:
    browser = await _logged_in(demo.carol.id)
    sockets = [
        await _connected(open_socket, demo.carol),
        await _connected(open_socket, demo.carol, cookie=_session_key(browser)),
    ]
    # The admin's bulk action: QuerySet.update sends no signal.
    await get_user_model().objects.filter(pk=demo.carol.id).aupdate(is_active=False)
    for socket in sockets:
        assert await socket.wait_closed(within=WITHIN_SECONDS) == WS_4401_UNAUTHORIZED


# -- the cost ---------------------------------------------------------------------------------


def test_a_sweep_reads_everything_in_three_queries(
    demo: Demo, django_assert_num_queries: Any
) -> None:
    """However many sockets: tokens, sessions and users each one query (up to the
    database's limit of parameters, which PostgreSQL does not have)."""
    token_ids = list(AuthToken.objects.values_list("id", flat=True)) + list(
        range(10**6, 10**6 + 500)
    )
    session_keys = [f"no-such-session-{n}" for n in range(500)]
    user_ids = [demo.alice.id, demo.bob.id, *(str(n) for n in range(10**6, 10**6 + 500))]
    with django_assert_num_queries(3):
        state = authority_read(token_ids=token_ids, session_keys=session_keys, user_ids=user_ids)
    assert len(state.tokens) == 4 and state.sessions == set()
    assert set(state.passwords) == {demo.alice.id, demo.bob.id}
