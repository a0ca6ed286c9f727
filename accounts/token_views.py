"""``POST /api/auth/token`` and ``POST /api/auth/logout`` (docs/rest-api.md#authentication)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate, logout
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import AuthToken
from accounts.throttles import LoginAttemptThrottle, login_attempt_succeeded, login_username
from accounts.tokens import token_issue, token_revoke

THROTTLED = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description="Too many failed attempts for this username or address; see Retry-After.",
)


class UsernameField(serializers.CharField):
    """The name as the login throttle counts it (one definition: ``login_username``)."""

    def to_internal_value(self, data: Any) -> str:
        return login_username(super().to_internal_value(data))


class TokenInputSerializer(serializers.Serializer[Any]):
    username = UsernameField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenOutputSerializer(serializers.Serializer[Any]):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class ObtainTokenView(APIView):
    """Exchange a username and password for a new API token (400 on bad credentials)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginAttemptThrottle]

    @extend_schema(
        request=TokenInputSerializer,
        responses={
            200: TokenOutputSerializer,
            400: OpenApiResponse(response=OpenApiTypes.OBJECT, description="Bad credentials."),
            429: THROTTLED,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = TokenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None or not user.is_active:
            raise serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]}
            )
        login_attempt_succeeded(request)
        grant = token_issue(user=user)
        return Response({"token": grant.key, "expires_at": grant.token.expires_at.isoformat()})


class LogoutView(APIView):
    """Revoke the caller's token (its sockets close with 4401 on every instance)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            204: None,
            401: OpenApiResponse(response=OpenApiTypes.OBJECT, description="No credentials."),
        },
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, AuthToken):
            token_revoke(token=request.auth)
        else:
            # A session (browsable API): end it; its sockets are not bound to a token.
            logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)
