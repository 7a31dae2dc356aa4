"""Reviewers' identities at the OpenID Connect provider (issue 24), and the step-up rule field."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0019_gateway_mcp_upstreams"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="policyrule",
            name="fresh_auth_minutes",
            field=models.PositiveIntegerField(
                blank=True,
                help_text=(
                    "High and critical: approving needs a sign-in at the identity provider within this many minutes."
                ),
                null=True,
            ),
        ),
        migrations.CreateModel(
            name="OidcIdentity",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("issuer", models.CharField(max_length=500)),
                ("subject", models.CharField(max_length=255)),
                ("email", models.CharField(blank=True, max_length=254)),
                ("email_verified", models.BooleanField(default=False)),
                ("groups", models.JSONField(blank=True, default=list)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("last_login_at", models.DateTimeField(blank=True, null=True)),
                ("auth_time", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="oidc_identities",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "OpenID Connect identity",
                "verbose_name_plural": "OpenID Connect identities",
                "ordering": ["issuer", "subject"],
                "indexes": [models.Index(fields=["email"], name="oidc_identity_email")],
                "constraints": [
                    models.UniqueConstraint(fields=("issuer", "subject"), name="oidc_identity_issuer_subject")
                ],
            },
        ),
    ]
