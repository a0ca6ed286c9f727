"""Who may do what through the REST API (docs/rest-api.md).

Participation is checked by looking the conversation up for the caller: a stranger to a
conversation learns only that it exists (403), which a 404 for a random id already tells apart;
never its title, participants or messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rest_framework.exceptions import NotFound, PermissionDenied

from chat import selectors
from chat.models import Conversation

NOT_FOUND_DETAIL = "No such conversation."
NOT_PARTICIPANT_DETAIL = "You are not a participant of this conversation."


def conversation_for_participant(*, conversation_id: object, user_id: int | str) -> Conversation:
    """The conversation if ``user_id`` takes part in it; else DRF's 404 or 403.

    A malformed id (not a UUID) is a 404 like any id that names nothing.
    """
    try:
        return selectors.conversation_get_for_participant(
            conversation_id=conversation_id, user_id=user_id
        )
    except selectors.ConversationNotFound:
        raise NotFound(NOT_FOUND_DETAIL) from None
    except selectors.NotParticipant:
        raise PermissionDenied(NOT_PARTICIPANT_DETAIL) from None


@contextlib.contextmanager
def participant_until_written() -> Iterator[None]:
    """A service that checks membership again as it writes (a message, a read marker) found
    the caller removed since ``conversation_for_participant``: the same 403."""
    try:
        yield
    except selectors.NotParticipant:
        raise PermissionDenied(NOT_PARTICIPANT_DETAIL) from None
