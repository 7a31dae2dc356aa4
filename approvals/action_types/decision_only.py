from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from catalog.base import ActionType, shorten
from catalog.risk import Risk

# Free params: the keys agents commonly use to say what they will do, tried in order.
VERB_KEYS = ("action", "operation", "verb", "command", "kind", "type")
AMOUNT_KEYS = ("amount", "total", "value", "price")
MINOR_AMOUNT_KEYS = ("amount_cents", "amount_minor")
TARGET_KEYS = (
    ("order_id", "order #"),
    ("order", "order #"),
    ("invoice_id", "invoice #"),
    ("invoice", "invoice #"),
    ("ticket_id", "ticket #"),
    ("customer", "customer "),
    ("customer_id", "customer "),
    ("account", "account "),
    ("account_id", "account "),
    ("user", ""),
    ("recipient", ""),
    ("service", ""),
    ("target", ""),
)
SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
# Verbs that move money towards the target read "to"; other amounts are "for" the target.
TOWARDS = {"refund", "pay", "credit", "transfer", "send", "grant", "issue"}


def _scalar(params: dict[str, Any], keys) -> str:
    for key in keys:
        value = params.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return ""


def _scalars(params: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in params.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)]


def _money(params: dict[str, Any]) -> str:
    raw, minor = _scalar(params, AMOUNT_KEYS), False
    if not raw:
        raw, minor = _scalar(params, MINOR_AMOUNT_KEYS), True
    if not raw:
        return ""
    try:
        amount = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        return shorten(raw, 30)
    if minor:
        amount /= 100
    currency = _scalar(params, ("currency",)).upper()
    number = f"{amount:,.0f}" if currency == "JPY" else f"{amount:,.2f}"
    if currency in SYMBOLS:
        return f"{SYMBOLS[currency]}{number}"
    return f"{number} {currency}".strip()


class DecisionOnly(ActionType):
    name = "decision.only"
    title = "Decision only"
    description = (
        "Countersign executes nothing: the decision (and any edited parameters) goes back to the agent, "
        "which acts itself after approval."
    )
    risk = Risk.MEDIUM
    executes = False
    preview_offline = True
    params_schema = {
        "type": "object",
        "description": "Free-form: whatever the agent will do, as it wants reviewers to see it.",
        "maxProperties": 100,
    }

    def describe(self, params: dict[str, Any]) -> str:
        """ "Refund €249.00 to order #88213", "Restart billing": from the keys agents commonly use; else the first
        few params as they are."""
        verb = _scalar(params, VERB_KEYS)
        money = _money(params)
        target = ""
        used = {*VERB_KEYS, *AMOUNT_KEYS, *MINOR_AMOUNT_KEYS, "currency"}
        for key, prefix in TARGET_KEYS:
            value = _scalar(params, (key,))
            if value:
                target = prefix + value.lstrip("#") if prefix.endswith("#") else prefix + value
                used.add(key)
                break
        # The values the sentence does not say (35 seats) are what an edit changes: never left out.
        rest = [f"{k}: {shorten(v, 40)}" for k, v in _scalars(params) if k not in used][:3]
        if verb or money:
            # Never a guessed verb: an amount without one is just the amount, "for" its target.
            words = shorten(verb.replace("_", " "), 40).capitalize() if verb else ""
            phrase = " ".join(w for w in (words, money) if w)
            if target and money:
                towards = bool(verb) and verb.lower().split("_")[0] in TOWARDS
                phrase += f" {'to' if towards else 'for'} {shorten(target, 60)}"
            elif target:
                phrase += f" {shorten(target, 60)}"
            return phrase + (f" ({'; '.join(rest)})" if rest else "")
        if rest:
            return "The agent acts after approval with " + "; ".join(rest)
        return "The agent acts itself after approval; Countersign runs nothing"
