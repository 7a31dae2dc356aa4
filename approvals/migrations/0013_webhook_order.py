from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0012_refusal_tally"),
    ]

    operations = [
        migrations.AddField(
            model_name="actionrequest",
            name="webhook_sequence",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("delivered_at__isnull", True), ("kind", "webhook")),
                fields=["action_id", "id"],
                name="outbox_webhook_undelivered",
            ),
        ),
    ]
