"""The chat domain in Django's admin.

Membership changes made here go through the same services as the REST API, so an added or
removed participant's live sockets learn of it (``member`` events) exactly as they would from
``POST``/``DELETE .../participants``; the event log is read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.forms import BaseInlineFormSet
from django.http import HttpRequest

from chat import services
from chat.models import Conversation, Event, Message, Participant


class ParticipantInline(admin.TabularInline):
    model = Participant
    extra = 0
    raw_id_fields = ("user", "last_read_message")
    readonly_fields = ("joined_at",)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "id", "created_at", "last_seq")
    search_fields = ("title", "id", "memberships__user__username")
    date_hierarchy = "created_at"
    readonly_fields = ("last_seq",)
    inlines = [ParticipantInline]

    def save_formset(
        self, request: HttpRequest, form: Any, formset: BaseInlineFormSet, change: bool
    ) -> None:
        if formset.model is not Participant:
            super().save_formset(request, form, formset, change)
            return
        conversation = form.instance
        by_id = request.user.pk or conversation.created_by_id or ""
        # What the admin's change message (its history) reads from a saved formset.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for removed in formset.deleted_forms:
            participant = removed.instance
            if participant.pk is not None:
                services.participant_remove(
                    conversation=conversation, user_id=participant.user_id, by_id=by_id
                )
                formset.deleted_objects.append(participant)
        for row in formset.forms:
            if row in formset.deleted_forms or not row.has_changed():
                continue
            participant = row.instance
            if participant.pk is None:
                services.participants_add(
                    conversation=conversation,
                    user_ids=[participant.user_id],
                    by_id=by_id,
                    by_policy=False,
                )
                formset.new_objects.append(participant)
                continue
            formset.changed_objects.append((participant, row.changed_data))
            # Read state edits save as they are; a changed user is a removal and an addition.
            old_user = Participant.objects.get(pk=participant.pk).user_id
            if old_user == participant.user_id:
                participant.save()
                continue
            services.participant_remove(conversation=conversation, user_id=old_user, by_id=by_id)
            services.participants_add(
                conversation=conversation,
                user_ids=[participant.user_id],
                by_id=by_id,
                by_policy=False,
            )


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("conversation", "seq", "type", "created_at")
    list_filter = ("type",)
    search_fields = ("conversation__id", "conversation__title")
    raw_id_fields = ("conversation",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ("user", "conversation", "joined_at", "last_read_at")
    search_fields = ("user__username", "conversation__title", "conversation__id")
    list_select_related = ("user", "conversation")
    raw_id_fields = ("user", "conversation", "last_read_message")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("conversation", "sender", "created_at", "short_body")
    search_fields = ("body", "sender__username", "conversation__title", "conversation__id")
    list_select_related = ("sender", "conversation")
    raw_id_fields = ("conversation", "sender")
    date_hierarchy = "created_at"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body[:80]
