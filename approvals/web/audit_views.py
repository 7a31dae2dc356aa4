"""The audit log page for staff: filters and keyset pagination (logic in approvals.selectors.audit)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from approvals.selectors.audit import AuditFilter, AuditPage, audit_page
from audit.models import AuditEvent

FILTER_FIELDS = ("actor", "agent", "verb", "action", "since", "until")
DATA_PREVIEW_CHARS = 240
_DATETIME_INPUTS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150)
    agent = forms.CharField(required=False, max_length=64)
    verb = forms.CharField(required=False, max_length=64)
    action = forms.UUIDField(required=False)
    since = forms.DateTimeField(required=False, input_formats=_DATETIME_INPUTS)
    until = forms.DateTimeField(required=False, input_formats=_DATETIME_INPUTS)
    before = forms.IntegerField(required=False, min_value=1)
    after = forms.IntegerField(required=False, min_value=0)

    def audit_filter(self) -> AuditFilter:
        data = self.cleaned_data
        return AuditFilter(
            actor=data["actor"].strip(),
            agent=data["agent"].strip(),
            verb=data["verb"].strip(),
            action_id=data["action"],
            since=data["since"],
            until=data["until"],
        )

    def filter_query(self) -> str:
        """The filters as a query string, for the pager links (without the cursor)."""
        return urlencode({k: self.data[k] for k in FILTER_FIELDS if self.data.get(k)})


@dataclass(frozen=True)
class EventRow:
    event: AuditEvent
    data_json: str


def _rows(page: AuditPage) -> list[EventRow]:
    rows = []
    for event in page.events:
        text = json.dumps(event.data, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
        if len(text) > DATA_PREVIEW_CHARS:
            text = text[: DATA_PREVIEW_CHARS - 1] + "…"
        rows.append(EventRow(event=event, data_json=text))
    return rows


@login_required
@require_GET
def audit_log(request):
    if not request.user.is_staff:
        raise Http404("No such page")
    form = AuditFilterForm(request.GET)
    page = AuditPage(events=[], older=None, newer=None)
    if form.is_valid():
        page = audit_page(form.audit_filter(), before=form.cleaned_data["before"], after=form.cleaned_data["after"])
    context = {
        "page": "audit",
        "form": form,
        "rows": _rows(page),
        "older": page.older,
        "newer": page.newer,
        "filter_query": form.filter_query(),
        "filtered": any(request.GET.get(k) for k in FILTER_FIELDS),
    }
    return render(request, "approvals/audit.html", context)
