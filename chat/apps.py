from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat.healing import healing_loop
        from chat.receivers import presence_changed_receiver
        from connections.instance import register_background_task
        from presence.signals import presence_changed

        presence_changed.connect(presence_changed_receiver, dispatch_uid="chat.presence")
        # Every instance heals its own sockets from the event log (docs/delivery.md).
        register_background_task(healing_loop, name="chat-healing")
