from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("approvals", "0004_notifications")]

    operations = []
