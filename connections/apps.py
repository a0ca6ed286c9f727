from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from connections.instance import register_background_task
        from connections.rebalance import rebalance_loop

        register_background_task(rebalance_loop, name="connections-rebalance")
