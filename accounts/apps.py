from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save, pre_save

        from accounts import (
            schema,  # noqa: F401  (registers the OpenAPI extension)
            sessions,  # noqa: F401  (a deleted session closes its sockets)
        )
        from accounts.admission import upgrade_refusal
        from accounts.tokens import user_saved_receiver, user_saving_receiver
        from realtime_project.runtime.daphne import upgrade_refusal_set

        # A connect the gate would shed is refused before its WebSocket handshake.
        upgrade_refusal_set(upgrade_refusal)
        # Deactivating a user, or changing their password, closes every socket of theirs
        # (docs/auth.md).
        pre_save.connect(
            user_saving_receiver, sender=get_user_model(), dispatch_uid="accounts.user_saving"
        )
        post_save.connect(
            user_saved_receiver, sender=get_user_model(), dispatch_uid="accounts.user_saved"
        )
