"""The demo chat page (docs/client.md): a template and two static files, no build step."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def demo_page(request: HttpRequest) -> HttpResponse:
    """The page signs in with the token endpoint itself, so it needs no server-side state."""
    return render(request, "demo/index.html")
