"""Markdown of notes (a VM's notes) rendered to HTML that is safe to put in a page.

Markdown passes raw HTML through, so its output goes through nh3 (the ammonia sanitizer) with a
short list of tags and attributes: no script, no event handler attributes, no style, no image
(the Content-Security-Policy would refuse another origin's), links only to http(s) and mailto.
"""

from __future__ import annotations

import markdown as _markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub",
    "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
MAX_NOTES_CHARS = 20_000


def render_markdown(text: str) -> SafeString:
    """``text`` as sanitized HTML (empty for empty text)."""
    if not text:
        return mark_safe("")
    html = _markdown.markdown(
        text[:MAX_NOTES_CHARS], extensions=["tables", "fenced_code", "sane_lists"]
    )
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(clean)
