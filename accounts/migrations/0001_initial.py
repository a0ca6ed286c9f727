# The API token model moved here from ``connections``. Its table stays
# ``connections_authtoken``: this migration only takes the model into this app's state (the
# table exists already, made by connections.0001) and points the model's content type, so
# its permissions and admin log entries, at the new app.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_type_move(apps, schema_editor, *, source="connections", target="accounts"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    # A fresh database has no content type yet (they are made after migrating): nothing to do.
    if ContentType.objects.using(db).filter(app_label=target, model="authtoken").exists():
        return
    ContentType.objects.using(db).filter(app_label=source, model="authtoken").update(
        app_label=target
    )


def content_type_move_back(apps, schema_editor):
    content_type_move(apps, schema_editor, source="accounts", target="connections")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("connections", "0002_live_connection_permissions"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuthToken",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("digest", models.CharField(editable=False, max_length=64, unique=True)),
                        ("created", models.DateTimeField(auto_now_add=True)),
                        ("expires_at", models.DateTimeField(db_index=True)),
                        ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="auth_tokens", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "verbose_name": "API token",
                        "ordering": ["-created"],
                        "db_table": "connections_authtoken",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_move, content_type_move_back),
    ]
