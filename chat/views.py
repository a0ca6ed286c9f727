"""REST views: parse and authorize, call a service, serialize the result (docs/rest-api.md).

Each write calls the same service as its WebSocket twin in ``chat.consumers``, so a REST call
emits exactly the events the frame would; with ``origin_channel=None`` the event reaches every
socket of the audience, the caller's own included.

Order of checks for anything about a conversation: credentials (401), then participation
(404 / 403), then the body (400), so a stranger learns nothing from a validation error.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors, services
from chat.models import Conversation, Participant
from chat.pagination import ConversationCursorPagination, MessageCursorPagination
from chat.permissions import conversation_for_participant, participant_until_written
from chat.schema import BAD_CURSOR, FIELD_ERRORS, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED
from chat.serializers import (
    ConversationInputSerializer,
    ConversationOutputSerializer,
    EventsOutputSerializer,
    EventsQuerySerializer,
    MessageInputSerializer,
    MessageOutputSerializer,
    ParticipantsInputSerializer,
    ReadInputSerializer,
    ReadOutputSerializer,
    TypingInputSerializer,
    TypingOutputSerializer,
    message_to_dict,
)
from realtime_project.conf import realtime_settings
from realtime_project.inputs import input_validate

# What a write about one conversation can answer besides its success (see the module doc).
CONVERSATION_WRITE_ERRORS = {
    400: FIELD_ERRORS,
    401: UNAUTHENTICATED,
    403: FORBIDDEN,
    404: NOT_FOUND,
}

CONVERSATION_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The conversation's id."
)


def caller_id(request: Request) -> int:
    """The authenticated caller's id (every view here requires authentication)."""
    pk = request.user.pk
    assert pk is not None
    return int(pk)


def conversation_to_dict(conversation: Conversation) -> dict[str, Any]:
    """A conversation as the wire shows it; uses prefetched memberships when there are some."""
    cache = getattr(conversation, "_prefetched_objects_cache", {})
    if "memberships" in cache:
        members = sorted(
            ((str(m.user_id), m.user.username) for m in cache["memberships"]),
            key=lambda item: int(item[0]),
        )
    else:
        names = selectors.usernames(
            user_ids=selectors.participant_ids(conversation_id=conversation.id)
        )
        members = sorted(names.items(), key=lambda item: int(item[0]))
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "participant_ids": [uid for uid, _ in members],
        "participants": [{"id": uid, "username": name} for uid, name in members],
        "created_at": conversation.created_at.isoformat(),
        "last_seq": conversation.last_seq,
    }


class ConversationViewSet(viewsets.GenericViewSet[Any]):  # conversations and messages
    """The caller's conversations and their messages."""

    # For the schema only (the path parameter's type); every query goes through selectors.
    queryset = Conversation.objects.none()
    lookup_field = "id"
    lookup_value_regex = "[^/]+"
    pagination_class = ConversationCursorPagination
    serializer_class = ConversationOutputSerializer

    def _conversation(self) -> Conversation:
        return conversation_for_participant(
            conversation_id=self.kwargs["id"], user_id=caller_id(self.request)
        )

    @extend_schema(
        summary="List the caller's conversations, newest first",
        responses={
            200: ConversationOutputSerializer(many=True),
            401: UNAUTHENTICATED,
            404: BAD_CURSOR,
        },
    )
    def list(self, request: Request) -> Response:
        queryset: QuerySet[Conversation] = selectors.conversation_list_for_user(
            user_id=caller_id(request)
        ).prefetch_related(
            Prefetch(
                "memberships",
                queryset=Participant.objects.select_related("user").only(
                    "conversation_id", "user_id", "user__username"
                ),
            )
        )
        page = self.paginate_queryset(queryset)
        assert page is not None  # pagination_class is set
        return self.get_paginated_response([conversation_to_dict(c) for c in page])

    @extend_schema(
        summary="Create a conversation (the caller is added)",
        request=ConversationInputSerializer,
        responses={201: ConversationOutputSerializer, 400: FIELD_ERRORS, 401: UNAUTHENTICATED},
    )
    def create(self, request: Request) -> Response:
        data = input_validate(ConversationInputSerializer, request.data)
        conversation = services.conversation_create(
            creator_id=caller_id(request),
            title=data["title"],
            participant_ids=data["participant_ids"],
        )
        return Response(conversation_to_dict(conversation), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="One conversation",
        parameters=[CONVERSATION_ID],
        responses={
            200: ConversationOutputSerializer,
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(conversation_to_dict(self._conversation()))

    @extend_schema(
        methods=["GET"],
        summary="The conversation's messages, newest first",
        parameters=[CONVERSATION_ID],
        responses={
            200: MessageOutputSerializer(many=True),
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    @extend_schema(
        methods=["POST"],
        summary="Send a message (emits a `message` event to every participant's sockets)",
        parameters=[CONVERSATION_ID],
        request=MessageInputSerializer,
        responses={
            200: MessageOutputSerializer,
            201: MessageOutputSerializer,
            **CONVERSATION_WRITE_ERRORS,
        },
    )
    @action(
        detail=True,
        methods=["get", "post"],
        pagination_class=MessageCursorPagination,
        serializer_class=MessageOutputSerializer,
    )
    def messages(self, request: Request, id: str) -> Response:
        conversation = self._conversation()
        if request.method == "POST":
            data = input_validate(MessageInputSerializer, request.data)
            try:
                with participant_until_written():
                    message, created = services.message_send_or_get(
                        conversation=conversation,
                        sender_id=caller_id(request),
                        body=data["body"],
                        client_id=data.get("client_id"),
                    )
            except selectors.ClientIdInUse:
                raise ValidationError({"client_id": [selectors.ClientIdInUse.MESSAGE]}) from None
            # A resend with the same client_id gets the first one's body, and a 200.
            code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
            return Response(message_to_dict(message), status=code)
        page = self.paginate_queryset(selectors.message_list(conversation=conversation))
        assert page is not None
        return self.get_paginated_response([message_to_dict(m) for m in page])

    @extend_schema(
        summary="The conversation's durable events after a seq (what a resume replays)",
        parameters=[
            CONVERSATION_ID,
            OpenApiParameter(
                "after_seq",
                OpenApiTypes.INT,
                OpenApiParameter.QUERY,
                description="The last seq the caller has (0: from the start).",
            ),
        ],
        responses={
            200: EventsOutputSerializer,
            **CONVERSATION_WRITE_ERRORS,
        },
    )
    @action(detail=True, methods=["get"], serializer_class=EventsOutputSerializer)
    def events(self, request: Request, id: str) -> Response:
        conversation = self._conversation()
        query = input_validate(EventsQuerySerializer, request.query_params)
        limit = realtime_settings.RESUME_MAX_EVENTS
        frames = selectors.event_list_after(
            conversation=conversation, after_seq=query["after_seq"], limit=limit
        )
        return Response({"events": frames, "last_seq": conversation.last_seq})

    @extend_schema(
        summary="Add participants (each a `member` event; their sockets join at once)",
        parameters=[CONVERSATION_ID],
        request=ParticipantsInputSerializer,
        responses={
            200: ConversationOutputSerializer,
            **CONVERSATION_WRITE_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], serializer_class=ConversationOutputSerializer)
    def participants(self, request: Request, id: str) -> Response:
        conversation = self._conversation()
        data = input_validate(ParticipantsInputSerializer, request.data)
        services.participants_add(
            conversation=conversation, user_ids=data["user_ids"], by_id=caller_id(request)
        )
        conversation.refresh_from_db()
        return Response(conversation_to_dict(conversation))

    @extend_schema(
        summary="Remove a participant: the user themself (leave) or the conversation's creator",
        parameters=[
            CONVERSATION_ID,
            OpenApiParameter("user_id", OpenApiTypes.STR, OpenApiParameter.PATH),
        ],
        request=None,
        responses={204: None, 401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"participants/(?P<user_id>[^/]+)",
        url_name="participant",
    )
    def participant(self, request: Request, id: str, user_id: str) -> Response:
        conversation = self._conversation()
        me = caller_id(request)
        if str(user_id) != str(me) and conversation.created_by_id != me:
            raise PermissionDenied("Only the conversation's creator removes other participants.")
        try:
            services.participant_remove(conversation=conversation, user_id=user_id, by_id=me)
        except (Participant.DoesNotExist, ValueError):
            raise NotFound("No such participant.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Say the caller started or stopped typing (emits a `typing` event)",
        parameters=[CONVERSATION_ID],
        request=TypingInputSerializer,
        responses={
            200: TypingOutputSerializer,
            **CONVERSATION_WRITE_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], serializer_class=TypingOutputSerializer)
    def typing(self, request: Request, id: str) -> Response:
        conversation = self._conversation()
        data = input_validate(TypingInputSerializer, request.data)
        result = services.typing_notify(
            conversation=conversation, user_id=caller_id(request), is_typing=data["is_typing"]
        )
        return Response(result)


class MessagesReadView(APIView):
    """Mark messages of one conversation read (emits a `read` event)."""

    @extend_schema(
        summary="Mark messages read",
        request=ReadInputSerializer,
        responses={
            200: ReadOutputSerializer,
            **CONVERSATION_WRITE_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        data = input_validate(ReadInputSerializer, request.data)
        conversation = conversation_for_participant(
            conversation_id=data["conversation_id"], user_id=caller_id(request)
        )
        with participant_until_written():
            result = services.receipt_mark_read(
                conversation=conversation,
                user_id=caller_id(request),
                message_ids=data["message_ids"],
            )
        return Response(result)
