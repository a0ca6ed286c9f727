from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat.receivers import presence_changed_receiver
        from presence.signals import presence_changed

        presence_changed.connect(presence_changed_receiver, dispatch_uid="chat.presence")
