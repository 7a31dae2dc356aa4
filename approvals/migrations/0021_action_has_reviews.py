"""ActionRequest.has_reviews, kept by the database: a trigger sets it as an action's first review is written, whoever
writes it (a decision, a seed, raw SQL), and another keeps an UPDATE from unsetting it, so it can never say "no
reviews" of an action that has one."""

from django.db import migrations, models

# Set as an action's first review is written; and never unset by an UPDATE that writes the column back as false (a
# full save() of an instance read before that review), which is the only way it could go back.
POSTGRESQL = """
CREATE OR REPLACE FUNCTION countersign_action_reviewed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE approvals_actionrequest SET has_reviews = true WHERE id = NEW.action_id AND NOT has_reviews;
    RETURN NULL;
END;
$$;
CREATE TRIGGER approvals_review_marks_action_reviewed
    AFTER INSERT ON approvals_review FOR EACH ROW EXECUTE FUNCTION countersign_action_reviewed();
CREATE OR REPLACE FUNCTION countersign_action_stays_reviewed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.has_reviews := true;
    RETURN NEW;
END;
$$;
CREATE TRIGGER approvals_actionrequest_stays_reviewed
    BEFORE UPDATE OF has_reviews ON approvals_actionrequest FOR EACH ROW
    WHEN (OLD.has_reviews AND NOT NEW.has_reviews) EXECUTE FUNCTION countersign_action_stays_reviewed();
"""
POSTGRESQL_UNDO = """
DROP TRIGGER IF EXISTS approvals_review_marks_action_reviewed ON approvals_review;
DROP FUNCTION IF EXISTS countersign_action_reviewed();
DROP TRIGGER IF EXISTS approvals_actionrequest_stays_reviewed ON approvals_actionrequest;
DROP FUNCTION IF EXISTS countersign_action_stays_reviewed();
"""
# SQLite runs one statement a call, and a BEFORE trigger cannot change NEW: the row is set back after the UPDATE.
SQLITE = [
    """CREATE TRIGGER approvals_review_marks_action_reviewed AFTER INSERT ON approvals_review
BEGIN
    UPDATE approvals_actionrequest SET has_reviews = 1 WHERE id = NEW.action_id AND NOT has_reviews;
END;""",
    """CREATE TRIGGER approvals_actionrequest_stays_reviewed AFTER UPDATE OF has_reviews ON approvals_actionrequest
WHEN OLD.has_reviews AND NOT NEW.has_reviews
BEGIN
    UPDATE approvals_actionrequest SET has_reviews = 1 WHERE id = NEW.id;
END;""",
]
SQLITE_UNDO = [
    "DROP TRIGGER IF EXISTS approvals_review_marks_action_reviewed;",
    "DROP TRIGGER IF EXISTS approvals_actionrequest_stays_reviewed;",
]
BACKFILL = """
UPDATE approvals_actionrequest SET has_reviews = true
 WHERE EXISTS (SELECT 1 FROM approvals_review r WHERE r.action_id = approvals_actionrequest.id)
"""


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    schema_editor.execute(BACKFILL, params=None)  # SQLite knows true since 3.23
    for statement in {"postgresql": [POSTGRESQL], "sqlite": SQLITE}.get(vendor, []):
        schema_editor.execute(statement, params=None)


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": [POSTGRESQL_UNDO], "sqlite": SQLITE_UNDO}.get(vendor, []):
        schema_editor.execute(statement, params=None)


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
