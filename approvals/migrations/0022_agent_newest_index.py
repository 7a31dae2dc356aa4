"""An agent's actions indexed in the API's order to the last key (newest first, then id): its first page reads that
page's rows, where the index on (agent, created_at) left PostgreSQL reading and sorting the agent's whole history for
every page (16 ms for an agent with 15,000 actions, 0.45 ms with this one; docs/BENCHMARKS.md, section 9). The new
index serves every query the old one did."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_webhook_secret_rotation"),
        ("approvals", "0021_action_has_reviews"),
        ("auth", "0012_alter_user_first_name_max_length"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["agent", "-created_at", "-id"], name="action_agent_newest"),
        ),
        migrations.RemoveIndex(model_name="actionrequest", name="action_agent_created"),
    ]
