from __future__ import annotations

from django.contrib import admin

from chat.models import Conversation, Message, Participant


class ParticipantInline(admin.TabularInline):
    model = Participant
    extra = 0
    raw_id_fields = ("user", "last_read_message")
    readonly_fields = ("joined_at",)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "id", "created_at")
    search_fields = ("title", "id", "memberships__user__username")
    date_hierarchy = "created_at"
    inlines = [ParticipantInline]


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
