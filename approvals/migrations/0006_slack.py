"""Slack interactivity (explicit Slack user → reviewer links) and the webhook delivery log."""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0005_audit_append_only"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='SlackIdentity',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('slack_user_id', models.CharField(help_text="The member ID from the user's Slack profile (⋮ → Copy member ID), e.g. U0123ABCD.", max_length=32, unique=True, validators=[django.core.validators.RegexValidator('^[UW][A-Z0-9]{2,30}$', 'A Slack user ID looks like "U0123ABCD".')])),
                ('note', models.CharField(blank=True, max_length=200)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='slack_identities', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'Slack identity',
                'verbose_name_plural': 'Slack identities',
                'ordering': ['slack_user_id'],
            },
        ),
        migrations.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('delivery', models.BigIntegerField()),
                ('event', models.CharField(max_length=64)),
                ('url', models.CharField(max_length=2048)),
                ('attempt', models.PositiveIntegerField()),
                ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('error', models.CharField(blank=True, max_length=500)),
                ('duration_ms', models.PositiveIntegerField()),
                ('at', models.DateTimeField(default=django.utils.timezone.now)),
                ('action', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='webhook_deliveries', to='approvals.actionrequest')),
            ],
            options={
                'verbose_name_plural': 'webhook deliveries',
                'ordering': ['-at', '-id'],
                'indexes': [models.Index(fields=['action', '-at'], name='webhook_delivery_action_at')],
            },
        ),
    ]
