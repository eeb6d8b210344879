# The model moved between apps: its table (named by db_table) stays; only Django's state changes.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scheduling', '0002_loop_heartbeats'),
        ('lablets', '0004_session_status_changed_at'),
        ('lcm', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='LoopHeartbeat',
                    fields=[
                        ('name', models.CharField(max_length=50, primary_key=True, serialize=False)),
                        ('last_tick_at', models.DateTimeField()),
                        ('last_duration_ms', models.FloatField(default=0)),
                        ('last_keys', models.PositiveIntegerField(default=0)),
                        ('last_error', models.TextField(blank=True, default='')),
                        ('ticks', models.PositiveBigIntegerField(default=0)),
                    ],
                    options={
                        'db_table': 'loop_heartbeats',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='ReceivedEvent',
                    fields=[
                        ('id', models.BigAutoField(primary_key=True, serialize=False)),
                        ('event_id', models.CharField(max_length=200, unique=True)),
                        ('event_type', models.CharField(max_length=200)),
                        ('source', models.CharField(blank=True, default='', max_length=500)),
                        ('subject', models.CharField(blank=True, default='', max_length=200)),
                        ('outcome', models.CharField(blank=True, default='', max_length=200)),
                        ('received_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ],
                    options={
                        'db_table': 'received_events',
                        'ordering': ['-received_at'],
                    },
                ),
            ],
        ),
    ]
