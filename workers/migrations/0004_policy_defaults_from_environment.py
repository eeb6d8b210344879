# A new SystemSettings row takes its lead times and grading timeout from the environment (callable defaults: no DB change).

import workers.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workers', '0003_system_settings'),
    ]

    operations = [
        migrations.AlterField(
            model_name='systemsettings',
            name='boot_lead_minutes',
            field=models.PositiveIntegerField(default=workers.models.default_boot_lead_minutes),
        ),
        migrations.AlterField(
            model_name='systemsettings',
            name='grading_timeout_minutes',
            field=models.PositiveIntegerField(default=workers.models.default_grading_timeout_minutes),
        ),
        migrations.AlterField(
            model_name='systemsettings',
            name='placement_lead_minutes',
            field=models.PositiveIntegerField(default=workers.models.default_placement_lead_minutes),
        ),
    ]
