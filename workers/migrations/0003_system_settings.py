# The model moved between apps: its table (named by db_table) stays; only Django's state changes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scheduling', '0002_loop_heartbeats'),
        ('workers', '0002_fleet_decisions_licence_requests'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='SystemSettings',
                    fields=[
                        ('id', models.PositiveSmallIntegerField(default=1, editable=False, primary_key=True, serialize=False)),
                        ('idle_detection_enabled', models.BooleanField(default=True)),
                        ('idle_timeout_minutes', models.PositiveIntegerField(default=30)),
                        ('autoscaling_enabled', models.BooleanField(default=False)),
                        ('min_workers_per_region', models.PositiveIntegerField(default=0)),
                        ('max_workers_per_region', models.PositiveIntegerField(default=10)),
                        ('scale_up_cooldown_minutes', models.PositiveIntegerField(default=5)),
                        ('scale_down_cooldown_minutes', models.PositiveIntegerField(default=15)),
                        ('drain_timeout_minutes', models.PositiveIntegerField(default=60)),
                        ('placement_lead_minutes', models.PositiveIntegerField(default=35)),
                        ('boot_lead_minutes', models.PositiveIntegerField(default=20)),
                        ('grading_timeout_minutes', models.PositiveIntegerField(default=30)),
                        ('discovery_enabled', models.BooleanField(default=True)),
                        ('discovery_ami_pattern', models.CharField(blank=True, default='cml-2.9*', max_length=200)),
                        ('discovery_interval_minutes', models.PositiveIntegerField(default=10)),
                        ('updated_by', models.CharField(blank=True, default='', max_length=150)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('default_worker_template', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='workers.workertemplate')),
                    ],
                    options={
                        'verbose_name': 'system settings',
                        'verbose_name_plural': 'system settings',
                        'db_table': 'system_settings',
                    },
                ),
            ],
        ),
    ]
