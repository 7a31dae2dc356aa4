"""The reviewer's edit form: which widget each part of an action type's schema gets, and the edit's diff."""

from __future__ import annotations

from approvals.action_types.email_send import EmailSend
from approvals.action_types.file_write import FileWrite
from approvals.action_types.http_request import HttpRequest
from approvals.action_types.slack_post import SlackPostMessage
from approvals.presentation.edit_form import edit_changes, form_spec


def fields(spec):
    return {f["key"]: f for f in spec["fields"]}


def test_a_file_write_edits_its_content_in_a_monospaced_text_area_and_its_mode_from_a_select():
    spec = form_spec(FileWrite.params_schema)
    form = fields(spec)
    assert spec["extra"] is None  # additionalProperties: false, nothing to add beyond the schema
    assert form["content"]["kind"] == "string"
    assert form["content"]["multiline"] and form["content"]["mono"] is True
    assert form["path"]["kind"] == "string" and not form["path"]["multiline"]
    assert form["mode"] == {"key": "mode", "required": True, "kind": "select", "options": ["create", "replace"]}
    assert form["expected_sha256"]["required"] is False
    assert form["expected_sha256"]["pattern"] == "^[0-9a-f]{64}$"


def test_an_email_body_is_a_proportional_text_area_and_recipients_a_list_of_strings():
    form = fields(form_spec(EmailSend.params_schema))
    assert form["body"]["multiline"] and form["body"]["mono"] is False
    assert not form["subject"]["multiline"]
    assert form["to"]["kind"] == "array" and form["to"]["item"]["kind"] == "string"
    assert form["to"]["minItems"] == 1 and form["to"]["required"] is True
    assert form["cc"]["required"] is False


def test_booleans_enums_maps_and_open_values_each_get_their_own_widget():
    slack = fields(form_spec(SlackPostMessage.params_schema))
    assert slack["unfurl_links"]["kind"] == "boolean"
    assert slack["text"]["multiline"] and slack["text"]["mono"] is False  # mrkdwn prose, up to 40,000 characters
    http = fields(form_spec(HttpRequest.params_schema))
    assert http["method"]["kind"] == "select" and "PATCH" in http["method"]["options"]
    assert http["headers"]["kind"] == "object" and http["headers"]["fields"] == []
    assert http["headers"]["extra"]["kind"] == "string"  # additionalProperties: {"type": "string"}
    assert http["json"]["kind"] == "free"  # any JSON: the form follows the value the agent sent
    assert not http["path"]["multiline"] and not http["headers"]["extra"]["multiline"]  # up to 2,048: one line


def test_numbers_keep_their_bounds_and_integers_say_so():
    spec = form_spec(
        {
            "type": "object",
            "properties": {
                "seats": {"type": "integer", "minimum": 1, "maximum": 40},
                "ratio": {"type": ["number", "null"], "exclusiveMaximum": 1},
            },
        }
    )
    form = fields(spec)
    assert form["seats"] == {"key": "seats", "required": False, "kind": "number", "integer": True,
                             "minimum": 1, "maximum": 40}  # fmt: skip
    assert form["ratio"]["kind"] == "number" and form["ratio"]["integer"] is False
    assert form["ratio"]["exclusiveMaximum"] == 1
    assert spec["extra"] == {"kind": "free"}  # the schema does not refuse other keys


def test_hints_in_the_schema_decide_text_areas_and_monospace():
    config = form_spec({"type": "string", "contentMediaType": "text/x-nginx-conf"}, "upstream")
    assert config["multiline"] and config["mono"] is True
    prose = form_spec({"type": "string", "contentMediaType": "text/plain"}, "notes")
    assert prose["multiline"] and prose["mono"] is False
    yaml = form_spec({"type": "string", "format": "yaml"}, "values")
    assert yaml["multiline"] and yaml["mono"] is True
    long_text = form_spec({"type": "string", "maxLength": 5000}, "summary")
    assert long_text["multiline"] and long_text["mono"] is None  # the script decides from the text itself
    short = form_spec({"type": "string", "maxLength": 80}, "name")
    assert not short["multiline"]


def test_unions_references_and_deep_nesting_fall_back_to_raw_json():
    assert form_spec({"oneOf": [{"type": "string"}, {"type": "integer"}]})["kind"] == "json"
    assert form_spec({"$ref": "#/$defs/x"})["kind"] == "json"
    assert form_spec({"type": ["string", "integer"]})["kind"] == "json"
    deep: dict = {"type": "string"}
    for _ in range(12):
        deep = {"type": "object", "properties": {"inner": deep}}
    node = form_spec(deep)
    depth = 0
    while node["kind"] == "object":
        node = node["fields"][0]
        depth += 1
    assert node["kind"] == "json" and depth < 12


def test_the_edit_of_a_config_is_a_line_diff_and_other_changes_are_before_and_after():
    proposed = {"path": "nginx.conf", "content": "server {\n  listen 80;\n}\n", "mode": "create"}
    edited = {"path": "nginx.conf", "content": "server {\n  listen 443 ssl;\n}\n", "mode": "replace"}
    rows, notice = edit_changes(proposed, edited)
    assert notice == ""
    by_path = {row["path"]: row for row in rows}
    assert set(by_path) == {"params.content", "params.mode"}
    diff = by_path["params.content"]["diff"]
    assert (diff.added, diff.removed) == (1, 1)
    assert by_path["params.mode"]["before"] == '"create"' and by_path["params.mode"]["after"] == '"replace"'
    assert edit_changes(proposed, dict(proposed)) == ([], "")
