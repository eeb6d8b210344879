# The model moved between apps: its table (named by db_table) stays; only Django's state changes.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('lcm', '0002_kernel_models'),
        ('workers', '0003_system_settings'),
        ('scheduling', '0002_loop_heartbeats'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='LoopHeartbeat',
                ),
                migrations.DeleteModel(
                    name='SystemSettings',
                ),
            ],
        ),
    ]
