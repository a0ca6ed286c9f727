"""REST views: parse and authorize, call a service, serialize the result."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response

from chat.serializers import TokenInputSerializer, TokenOutputSerializer


class ObtainTokenView(ObtainAuthToken):
    """Exchange a username and password for the user's API token (400 on bad credentials)."""

    @extend_schema(request=TokenInputSerializer, responses={200: TokenOutputSerializer})
    def post(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().post(request, *args, **kwargs)
