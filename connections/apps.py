from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save, pre_save

        from connections import (
            schema,  # noqa: F401  (registers the OpenAPI extension)
            sessions,  # noqa: F401  (a deleted session closes its sockets)
        )
        from connections.admission import upgrade_refusal
        from connections.instance import register_background_task
        from connections.rebalance import rebalance_loop
        from connections.tokens import user_saved_receiver, user_saving_receiver
        from realtime_project.runtime.daphne import upgrade_refusal_set

        register_background_task(rebalance_loop, name="connections-rebalance")
        # A connect the gate would shed is refused before its WebSocket handshake.
        upgrade_refusal_set(upgrade_refusal)
        # Deactivating a user, or changing their password, closes every socket of theirs
        # (docs/auth.md).
        pre_save.connect(
            user_saving_receiver, sender=get_user_model(), dispatch_uid="connections.user_saving"
        )
        post_save.connect(
            user_saved_receiver, sender=get_user_model(), dispatch_uid="connections.user_saved"
        )
