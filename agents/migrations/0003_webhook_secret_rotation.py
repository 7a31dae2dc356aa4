from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_agent_freeze"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="previous_webhook_secret",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="agent",
            name="previous_webhook_secret_until",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
