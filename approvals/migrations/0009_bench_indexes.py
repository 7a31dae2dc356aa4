"""An index the benchmarks showed missing (docs/BENCHMARKS.md, "Flat with history").

The queue's risk facet, with "any status" selected, counts ``risk = X`` (and, for a reviewer, their groups):
no index led with the risk, so at a million actions a risk that is rare or absent was counted by reading the
whole table (about half a second). This index lets that count stop after the rows it needs.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("approvals", "0007_desk")]

    operations = [
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["risk", "reviewer_group"], name="action_risk_group"),
        ),
    ]
