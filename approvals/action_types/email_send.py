"""``email.send``: one plain-text email through Django's configured email backend.

The From address is Countersign's (``COUNTERSIGN_EMAIL_FROM``), never the
agent's; the SMTP server and its login come from the ``EMAIL_*`` settings, so
the type needs no stored credential. Reviewers see the message exactly as it
will be sent; the executor gets a sender that can send that message once.
"""

from __future__ import annotations

import smtplib
from email.utils import getaddresses
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.core.validators import validate_email

from approvals.credentials.redaction import Redactor
from catalog.base import ActionType, ExecutionError, ParamsRejected, Preview, plain_list, shorten
from catalog.risk import Risk

MAX_RECIPIENTS = 50
MAX_SUBJECT_CHARS = 200
MAX_BODY_BYTES = 100 * 1024


def _address_list(description: str, *, min_items: int = 0, max_items: int = MAX_RECIPIENTS) -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": min_items,
        "maxItems": max_items,
        "uniqueItems": True,
        "items": {"type": "string", "minLength": 3, "maxLength": 320},
        "description": description,
    }


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {text}".strip()


def _refusals(recipients: dict) -> dict[str, str]:
    """smtplib's {recipient: (code, reply)} as {bare address: "code reply"}."""
    return {(getaddresses([rcpt])[0][1] or rcpt): _reply(code, msg) for rcpt, (code, msg) in sorted(recipients.items())}


def _has_control_chars(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def address_error(value: str) -> str | None:
    """Why ``value`` is not one email address (``a@b.example`` or ``Name <a@b.example>``), or None."""
    if _has_control_chars(value):
        return "newlines and control characters are not allowed (header injection)"
    parsed = getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        return "is not exactly one email address"
    try:
        validate_email(parsed[0][1])
    except ValidationError:
        return "is not a valid email address"
    return None


class OneMessageSender:
    """Sends exactly one prepared message, at most once, through the configured backend."""

    def __init__(self, message: EmailMessage):
        self._message = message
        self._sent = False
        # How far the SMTP conversation got: "not sent", "sending" (DATA begun, no answer yet) or "accepted"
        # (the server answered 250 to the message). A connection lost while "sending" may have delivered it.
        self.data_state = "not sent"
        self.refused: dict[str, str] = {}
        # The mail server's login is a secret Countersign puts on the wire (AUTH PLAIN sends base64 of
        # "\0user\0password", AUTH LOGIN the password's base64): a server reply that echoes it is scrubbed.
        user, password = str(settings.EMAIL_HOST_USER or ""), str(settings.EMAIL_HOST_PASSWORD or "")
        self._redactor = Redactor([password, f"\0{user}\0{password}"] if password else [])

    @property
    def redactor(self) -> Redactor:
        return self._redactor

    @property
    def backend(self) -> str:
        return settings.EMAIL_BACKEND

    @property
    def message_id(self) -> str:
        return self._message.extra_headers["Message-ID"]

    def summary(self) -> dict[str, Any]:
        m = self._message
        summary = {"from": m.from_email, "to": list(m.to), "cc": list(m.cc), "subject": m.subject, "body": m.body}
        if m.reply_to:
            summary["reply_to"] = list(m.reply_to)
        return summary

    def send(self) -> tuple[int, dict[str, str]]:
        """Send the message; returns (messages sent, {refused recipient: server reply})."""
        if self._sent:
            raise RuntimeError("this sender has already sent its message")
        self._sent = True
        connection = get_connection(fail_silently=False)
        if not isinstance(connection, SmtpBackend):
            return connection.send_messages([self._message]) or 0, {}
        refused = self.refused
        with connection:
            # Django's backend drops what smtplib returns: the recipients refused while others were accepted.
            smtp = connection.connection
            sendmail, data = smtp.sendmail, smtp.data

            def sendmail_noting_refusals(*args, **kwargs):
                result = sendmail(*args, **kwargs) or {}
                refused.update(_refusals(result))
                return result

            def data_noting_progress(*args, **kwargs):
                self.data_state = "sending"
                code, reply = data(*args, **kwargs)
                if code == 250:
                    self.data_state = "accepted"
                return code, reply

            smtp.sendmail, smtp.data = sendmail_noting_refusals, data_noting_progress
            sent = connection.send_messages([self._message]) or 0
        return sent, refused

    def where(self) -> str:
        if self.backend.endswith("smtp.EmailBackend"):
            return f"the mail server {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
        return f"the email backend {self.backend}"


def _send_telling_what_happened(client: OneMessageSender) -> tuple[int, dict[str, str]]:
    """``client.send()``, except that a failure once the message was handed over is told as what it is."""
    try:
        return client.send()
    except Exception as exc:
        if client.data_state == "accepted":
            # The server took the message; what failed came after it (closing the session).
            return 1, client.refused
        if client.data_state == "sending" and not isinstance(exc, smtplib.SMTPResponseException):
            # The message was on its way and the server never said whether it took it.
            raise ExecutionError(
                f"the connection to {client.where()} was lost while sending the message "
                f"({type(exc).__name__}): it may have been sent",
                permanent=False,
                outcome_unknown=True,
                details={"transport_error": type(exc).__name__},
            ) from None
        raise


class EmailSend(ActionType):
    name = "email.send"
    title = "Send an email"
    description = (
        "Send one plain-text email from Countersign's address (COUNTERSIGN_EMAIL_FROM) through the configured "
        "mail server. Reviewers see the message exactly as it will be sent."
    )
    preview_offline = True  # the message is built, not sent: no connection until execution
    risk = Risk.MEDIUM
    credential_kinds = ()
    idempotent = False
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["to", "subject", "body"],
        "properties": {
            "to": _address_list("Recipients.", min_items=1),
            "cc": _address_list("Copy recipients."),
            "reply_to": _address_list("Reply-To addresses.", max_items=10),
            "subject": {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT_CHARS},
            "body": {"type": "string", "maxLength": MAX_BODY_BYTES, "description": "Plain text, up to 100 KB."},
        },
    }

    def describe(self, params: dict[str, Any]) -> str:
        text = f"Send '{shorten(params.get('subject') or '', 80)}' to {plain_list(list(params.get('to') or []), 2)}"
        cc = list(params.get("cc") or [])
        return text + (f" (copy to {plain_list(cc, 2)})" if cc else "")

    def check_params(self, params: dict[str, Any], credential) -> None:
        errors: dict[str, list[str]] = {}
        for field in ("to", "cc", "reply_to"):
            for i, value in enumerate(params.get(field) or []):
                problem = address_error(value)
                if problem:
                    errors.setdefault(f"{field}.{i}", []).append(f"{value!r}: {problem}.")
        if _has_control_chars(params["subject"]):
            errors["subject"] = ["Newlines and control characters are not allowed in the subject (header injection)."]
        if len(params["body"].encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
            errors["body"] = [f"The body is limited to {MAX_BODY_BYTES // 1024} KB (UTF-8)."]
        if errors:
            raise ParamsRejected(errors)

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str) -> OneMessageSender:
        sender = settings.COUNTERSIGN_EMAIL_FROM
        domain = getaddresses([sender])[0][1].rpartition("@")[2] or "countersign.invalid"
        message = EmailMessage(
            subject=params["subject"],
            body=params["body"],
            from_email=sender,
            to=list(params["to"]),
            cc=list(params.get("cc") or []),
            reply_to=list(params.get("reply_to") or []),
            # The action id: the same on any attempt, so a receiver can tell a duplicate.
            headers={"Message-ID": f"<countersign.{idempotency_key}@{domain}>"},
        )
        return OneMessageSender(message)

    def execute(self, params: dict[str, Any], client: OneMessageSender) -> dict[str, Any]:
        try:
            sent, refused = _send_telling_what_happened(client)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = _refusals(exc.recipients)
            raise ExecutionError(
                f"{client.where()} refused every recipient; nothing was sent", details={"refused": refused}
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise ExecutionError(
                f"{client.where()} refused Countersign's login ({exc.smtp_code})", details={"smtp_code": exc.smtp_code}
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise ExecutionError(
                f"{client.where()} answered {_reply(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
                details={"smtp_code": exc.smtp_code},
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ExecutionError(
                f"could not send through {client.where()} ({type(exc).__name__})", permanent=False
            ) from None
        if sent != 1:
            raise ExecutionError(f"{client.where()} did not take the message", permanent=False)
        summary = client.summary()
        del summary["body"]
        result = {"sent": True, "message_id": client.message_id, **summary, "body_chars": len(params["body"])}
        if refused:
            # Delivered to the others; say who was left out rather than fail a message that went out.
            result["refused"] = dict(sorted(refused.items()))
        return result

    def preview(self, params: dict[str, Any], client: OneMessageSender) -> Preview:
        message = client.summary()
        to = message["to"]
        title = f"Email to {to[0]}" + (f" and {len(to) - 1} more" if len(to) > 1 else "")
        notes = [f"Sent from {message['from']} through {client.where()}."]
        if not client.backend.endswith("smtp.EmailBackend"):
            notes.append("This email backend does not deliver mail: the message stays on the Countersign server.")
        return Preview(kind="message", title=title, after=message, notes=notes)
