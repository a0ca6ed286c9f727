"""Input and output serializers, shared by REST views and WebSocket frames."""

from __future__ import annotations

from rest_framework import serializers


class TokenInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
