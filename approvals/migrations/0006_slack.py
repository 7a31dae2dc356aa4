from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("approvals", "0005_audit_append_only")]

    operations = []
