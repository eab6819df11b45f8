"""The tag colours page: platform admins give tags their chips' colours (the same list as
``PUT /api/tag-colours/``)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from panel.models import TAG_PALETTE, TagColour
from panel.tenancy import is_platform_admin

NEW_ROWS = 3


@login_required
def tag_colours(request: HttpRequest) -> HttpResponse:
    if not is_platform_admin(request.user):
        raise PermissionDenied("Only platform admins set tag colours.")
    rows = [{"tag": tc.tag, "colour": tc.colour} for tc in TagColour.objects.all()]
    errors: list[str] = []
    if request.method == "POST":
        tags = request.POST.getlist("tag")
        colours = request.POST.getlist("colour")
        rows = [
            {"tag": t.strip(), "colour": c.strip()}
            for t, c in zip(tags, colours, strict=False)
            if t.strip()
        ]
        seen: set[str] = set()
        for row in rows:
            try:
                TagColour(tag=row["tag"], colour=row["colour"]).clean_fields()
            except ValidationError as exc:
                for field, msgs in exc.message_dict.items():
                    errors.append(f"{row['tag']} ({field}): {'; '.join(msgs)}")
            if row["tag"] in seen:
                errors.append(f"{row['tag']}: listed more than once.")
            seen.add(row["tag"])
        if not errors:
            TagColour.replace_all({row["tag"]: row["colour"] for row in rows})
            messages.success(request, "Tag colours saved.")
            return redirect("ui:tag_colours")
    context = {
        "rows": rows + [{"tag": "", "colour": ""}] * NEW_ROWS,
        "palette": TAG_PALETTE,
        "errors": errors,
    }
    return render(request, "panel/tag_colours.html", context, status=400 if errors else 200)
