"""ActionRequest.has_reviews, kept by the database: a trigger sets it as an action's first review is written, whoever
writes it (a decision, a seed, raw SQL), so it can never say "no reviews" of an action that has one."""

from django.db import migrations, models

POSTGRESQL = """
CREATE OR REPLACE FUNCTION countersign_action_reviewed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE approvals_actionrequest SET has_reviews = true WHERE id = NEW.action_id AND NOT has_reviews;
    RETURN NULL;
END;
$$;
CREATE TRIGGER approvals_review_marks_action_reviewed
    AFTER INSERT ON approvals_review FOR EACH ROW EXECUTE FUNCTION countersign_action_reviewed();
"""
POSTGRESQL_UNDO = """
DROP TRIGGER IF EXISTS approvals_review_marks_action_reviewed ON approvals_review;
DROP FUNCTION IF EXISTS countersign_action_reviewed();
"""
SQLITE = """
CREATE TRIGGER approvals_review_marks_action_reviewed AFTER INSERT ON approvals_review
BEGIN
    UPDATE approvals_actionrequest SET has_reviews = 1 WHERE id = NEW.action_id AND NOT has_reviews;
END;
"""
SQLITE_UNDO = "DROP TRIGGER IF EXISTS approvals_review_marks_action_reviewed;"
BACKFILL = """
UPDATE approvals_actionrequest SET has_reviews = true
 WHERE EXISTS (SELECT 1 FROM approvals_review r WHERE r.action_id = approvals_actionrequest.id)
"""


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    schema_editor.execute(BACKFILL.replace("true", "1") if vendor == "sqlite" else BACKFILL, params=None)
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE, params=None)


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_UNDO, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_UNDO, params=None)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0020_sso_identities")]

    operations = [
        migrations.AddField(
            model_name="actionrequest",
            name="has_reviews",
            field=models.BooleanField(db_default=False, default=False, editable=False),
        ),
        migrations.RunPython(install, uninstall),
    ]
