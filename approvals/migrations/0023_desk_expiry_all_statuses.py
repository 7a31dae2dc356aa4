"""The queue's default sort, expiring soonest (issue 20), across every status: a reviewer's group and staff's.
Without an index in that order PostgreSQL read and sorted the whole history for each page of "any status" (537 ms
at a million actions against 74 ms at ten thousand; docs/BENCHMARKS.md, section 4). With them a page reads its rows
from the index, as every other sort of the queue does."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0022_agent_newest_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["reviewer_group", "expires_at", "id"], name="action_desk_group_all_expires"),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["expires_at", "id"], name="action_desk_all_expires"),
        ),
    ]
