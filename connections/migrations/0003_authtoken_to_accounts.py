# The API token model now lives in ``accounts`` (accounts.0001), on the same table: this
# app only forgets it, and the database is left as it is.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("connections", "0002_live_connection_permissions"),
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuthToken")],
            database_operations=[],
        ),
    ]
