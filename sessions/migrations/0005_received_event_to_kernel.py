# The model moved between apps: its table (named by db_table) stays; only Django's state changes.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('lcm', '0002_kernel_models'),
        ('lablets', '0004_session_status_changed_at'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='ReceivedEvent',
                ),
            ],
        ),
    ]
