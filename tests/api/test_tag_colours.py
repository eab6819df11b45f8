"""Tag colours: the palette or a #rrggbb, set by platform admins as one list, read by everyone,
drawn as chips; and Markdown notes rendered with nothing that runs."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.template import Context, Template
from django.test import RequestFactory

from panel.api.serializers import MAX_TAG_COLOURS
from panel.markdown import render_markdown
from panel.models import TagColour

pytestmark = pytest.mark.django_db

URL = "/api/tag-colours/"


@pytest.mark.parametrize("colour", ["blue", "grey", "#1a2B3c"])
def test_tag_colour_accepts_palette_and_hex(colour):
    TagColour(tag="web", colour=colour).full_clean()


@pytest.mark.parametrize(
    "colour", ["", "navy", "#12345", "#1234567", "#ggg000", "red;", "url(x)", "#12345g"]
)
def test_tag_colour_refuses_other_colours(colour):
    with pytest.raises(ValidationError) as err:
        TagColour(tag="web", colour=colour).full_clean()
    assert "colour" in err.value.message_dict


def test_tag_colour_refuses_a_bad_tag():
    with pytest.raises(ValidationError) as err:
        TagColour(tag="<b>", colour="red").full_clean()
    assert "tag" in err.value.message_dict


def test_admin_puts_the_whole_list_and_everyone_reads_it(api, admin_user, tenant, make_member):
    TagColour.objects.create(tag="old", colour="red")
    body = [{"tag": "web", "colour": "blue"}, {"tag": "db", "colour": "#AABBCC"}]
    r = api.as_user(admin_user).put(URL, body, format="json")
    assert r.status_code == 200, r.content
    assert r.json() == [{"tag": "db", "colour": "#aabbcc"}, {"tag": "web", "colour": "blue"}]
    viewer = make_member(tenant, "viewer")
    r = api.as_user(viewer).get(URL)
    assert r.status_code == 200
    assert {row["tag"] for row in r.json()} == {"db", "web"}  # "old" was left out: gone


def test_tenant_admin_cannot_set_colours(api, tenant, make_member):
    r = api.as_user(make_member(tenant, "admin")).put(
        URL, [{"tag": "web", "colour": "blue"}], format="json"
    )
    assert r.status_code == 403
    assert not TagColour.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ([{"tag": "web", "colour": "javascript:x"}], "colour"),
        ([{"tag": "we b", "colour": "red"}], "tag"),
        ([{"tag": "web"}], "colour"),
    ],
)
def test_bad_colours_are_a_400_with_the_field(api, admin_user, body, field):
    r = api.as_user(admin_user).put(URL, body, format="json")
    assert r.status_code == 400
    # A list's errors come keyed by the item's index (panel.api.exceptions).
    assert field in r.json()["0"]


@pytest.mark.parametrize("body", [{"tag": "web"}, "blue", [{"tag": "a", "colour": "red"}] * 2])
def test_a_body_that_is_not_a_list_of_distinct_tags_is_a_400(api, admin_user, body):
    r = api.as_user(admin_user).put(URL, body, format="json")
    assert r.status_code == 400
    assert not TagColour.objects.exists()


def test_tag_chip_draws_the_colour_with_one_query(django_assert_num_queries):
    TagColour.objects.create(tag="web", colour="green")
    TagColour.objects.create(tag="db", colour="#00ff00")
    request = RequestFactory().get("/")
    tpl = Template("{% load paddock %}{% for t in tags %}{% tag_chip t %}{% endfor %}")
    with django_assert_num_queries(1):
        html = tpl.render(Context({"request": request, "tags": ["web", "db", "x", "web"]}))
    assert 'class="tag tag-c-green" data-tag="web">web<' in html
    assert 'fill="#00ff00"' in html
    assert 'class="tag" data-tag="x">x<' in html


def test_markdown_removes_script_event_handlers_and_javascript_links():
    html = str(
        render_markdown(
            "**bold** <script>alert(1)</script>\n\n"
            '<img src="x" onerror="alert(2)"> <b onclick="alert(3)">b</b>\n\n'
            "[click](javascript:alert(4)) <a href='JaVaScRiPt:alert(5)'>y</a> "
            "[ok](https://example.com/)\n\n![remote](https://evil.example/x.png)"
        )
    )
    assert "<strong>bold</strong>" in html
    assert "<script" not in html and "alert(1)" not in html
    assert "onerror" not in html and "onclick" not in html and "<img" not in html
    assert "javascript:" not in html.lower()
    assert 'href="https://example.com/"' in html
    assert "<b>b</b>" in html


def test_markdown_escapes_what_it_does_not_allow():
    assert str(render_markdown('<iframe src="https://x"></iframe>text')).strip() == "<p>text</p>"
    assert str(render_markdown("")) == ""


def test_more_tag_colours_than_one_put_may_hold_is_a_400(api, admin_user):
    api.as_user(admin_user)
    body = [{"tag": f"t{n}", "colour": "blue"} for n in range(MAX_TAG_COLOURS + 1)]
    response = api.put("/api/tag-colours/", body, format="json")
    assert response.status_code == 400, response.content
    assert str(MAX_TAG_COLOURS) in str(response.json())
    assert not TagColour.objects.exists()
