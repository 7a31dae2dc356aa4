"""Time-boxed access and reverts (issue 23)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0017_desk_v2"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations: list = [
        migrations.AddField(
            model_name="actionrequest",
            name="access_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="actionrequest",
            name="extends",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="extensions",
                to="approvals.actionrequest",
            ),
        ),
        migrations.AddField(
            model_name="actionrequest",
            name="revert_reason",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name="actionrequest",
            name="reverted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="actionrequest",
            name="reverts",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="reversals",
                to="approvals.actionrequest",
            ),
        ),
        migrations.AddField(
            model_name="actionrequest",
            name="state_before",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="policyrule",
            name="max_duration_seconds",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="policyrule",
            name="require_duration",
            field=models.BooleanField(default=False),
        ),
        migrations.CreateModel(
            name="AccessLease",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("active", "Active"),
                            ("reverting", "Reverting"),
                            ("retrying", "Retrying"),
                            ("reverted", "Reverted"),
                            ("nothing_to_revert", "Nothing To Revert"),
                        ],
                        default="active",
                        max_length=20,
                    ),
                ),
                ("granted_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("expires_at", models.DateTimeField()),
                ("revert_params", models.JSONField(default=dict)),
                (
                    "reason",
                    models.CharField(
                        blank=True,
                        choices=[("", "-"), ("expired", "Expired"), ("ended_early", "Ended Early")],
                        default="",
                        max_length=20,
                    ),
                ),
                ("next_attempt_at", models.DateTimeField()),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("reverted_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "action",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="access_lease",
                        to="approvals.actionrequest",
                    ),
                ),
                (
                    "ended_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "revert_action",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="approvals.actionrequest",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("state__in", ["active", "retrying"])),
                        fields=["next_attempt_at"],
                        name="access_lease_due",
                    ),
                    models.Index(fields=["state", "expires_at"], name="access_lease_state"),
                ],
            },
        ),
    ]
