"""The gateway's MCP upstream servers (issue 22)."""

import django.core.validators
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("approvals", "0018_timeboxed_access")]

    operations: list = [
        migrations.CreateModel(
            name="McpUpstream",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "name",
                    models.CharField(
                        help_text="Agents see its tools as <name>.<tool>; "
                        "capabilities grant them as mcp.<name>.<tool>.",
                        max_length=50,
                        unique=True,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[a-z0-9][a-z0-9_-]{0,49}$",
                                "Lower-case letters, digits, '-' and '_', starting with a letter or digit.",
                            )
                        ],
                    ),
                ),
                ("description", models.TextField(blank=True, help_text="What this server reaches, for reviewers.")),
                (
                    "transport",
                    models.CharField(
                        choices=[("stdio", "stdio (a command Countersign runs)"), ("http", "streamable HTTP (a URL)")],
                        max_length=8,
                    ),
                ),
                ("command", models.CharField(blank=True, help_text="stdio: the executable to run.", max_length=500)),
                (
                    "args",
                    models.JSONField(
                        blank=True, default=list, help_text='stdio: its arguments, e.g. ["--repository", "/srv"].'
                    ),
                ),
                (
                    "url",
                    models.CharField(
                        blank=True, help_text="http: the MCP endpoint, e.g. https://host/mcp.", max_length=2000
                    ),
                ),
                ("secrets_encrypted", models.BinaryField(default=b"")),
                ("secret_names", models.JSONField(blank=True, default=dict, editable=False)),
                (
                    "trust_annotations",
                    models.BooleanField(
                        default=False,
                        help_text="Take this server's tool annotations at their word: a tool marked readOnlyHint is "
                        "low risk and one marked destructiveHint high risk, so rules by risk apply to them. Off: every "
                        "tool is medium risk, whatever the server claims.",
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                (
                    "timeout_seconds",
                    models.PositiveIntegerField(
                        default=30, help_text="How long a connection, a tool listing or a tool call may take."
                    ),
                ),
                ("tools", models.JSONField(blank=True, default=list, editable=False)),
                ("tools_refreshed_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={"verbose_name": "MCP upstream", "ordering": ["name"]},
        ),
    ]
