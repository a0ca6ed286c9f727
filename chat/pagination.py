"""Cursor pagination for the chat lists (docs/rest-api.md#pagination).

Cursors rather than page numbers: a conversation keeps growing at its head while a client pages
back through it, and a cursor neither skips nor repeats a message when new ones arrive. Both
lists walk an index on ``(-created_at, -id)``.
"""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class NewestFirstCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class MessageCursorPagination(NewestFirstCursorPagination):
    """A conversation's messages, newest first."""


class ConversationCursorPagination(NewestFirstCursorPagination):
    """The caller's conversations, newest first."""
