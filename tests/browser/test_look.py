"""How the console looks and reads: a VM's Markdown notes edited in place and rendered safely,
tag colours in the tree and the tree grouped by tag, dark mode (the system's and the user's
choice), and the layout at a phone's 390 px (the tree a drawer, nothing wider than the screen,
touch-sized power buttons). Screenshots of the datacenter, a VM and the wizard in light, dark
and 390 px go to test-artifacts/look-*.png."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser.conftest import ARTIFACTS, BROWSER, CHROMIUM, shot
from tests.browser.conftest import log_in as _log_in

pytestmark = BROWSER

LIGHT_BG = "rgb(238, 241, 244)"  # --bg, light
DARK_BG = "rgb(18, 23, 28)"  # --bg, dark
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def open_look():
    """``open_look(**context_options)``: a page in a fresh headless Chromium whose context takes
    Playwright's options (``color_scheme``, ``viewport``, ``has_touch``); a JavaScript error on
    it fails the test."""
    ARTIFACTS.mkdir(exist_ok=True)
    opened = []
    with sync_playwright() as p:

        def open_(**options):
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu",
                      "--disable-background-networking"],
            )  # fmt: skip
            options.setdefault("viewport", {"width": 1440, "height": 900})
            context = browser.new_context(**options)
            page = context.new_page()
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            opened.append((browser, context, errors))
            return page

        yield open_
        from django.db import connections

        connections.close_all()
        for browser, context, _errors in opened:
            context.close()
            browser.close()
    errors = [e for _b, _c, errs in opened for e in errs]
    assert not errors, f"JavaScript errors: {errors}"


def log_in(page, base: str) -> None:
    _log_in(page, base, "root-admin", "pw-admin", start="/")


def log_in_phone(page, base: str) -> None:
    """Log in on a narrow screen, where the tree is in the closed drawer."""
    page.goto(base + "/login/")
    page.fill("#id_username", "root-admin")
    page.fill("#id_password", "pw-admin")
    page.click("button[type=submit]")
    expect(page.locator("html[data-ready]")).to_be_attached()


def background(page, selector: str = "body") -> str:
    return page.eval_on_selector(selector, "el => getComputedStyle(el).backgroundColor")


def first_vm(host):
    from vms.models import VirtualMachine

    return VirtualMachine.objects.filter(host=host, is_template=False).order_by("name").first()


def test_notes_are_edited_in_place_and_render_without_what_runs(live_host, live_server, open_look):
    page = open_look()
    base = live_server.url
    vm = first_vm(live_host)
    log_in(page, base)
    page.goto(f"{base}/vms/{vm.pk}/")
    notes = page.locator("#vm-notes")
    expect(notes).to_contain_text("No notes yet.")
    notes.locator("summary", has_text="Edit notes").click()
    page.fill(
        "#vm-notes-text",
        "## Runbook\n\n**Owner**: the web team. `systemctl restart app`\n\n"
        "- first\n- second\n\n"
        "<script>window.__pwned = 1</script>\n\n"
        '<img src="x" onerror="window.__pwned = 2">\n\n'
        "[click me](javascript:window.__pwned=3) [docs](https://example.com/docs)\n",
    )
    with page.expect_response(lambda r: r.url.endswith(f"/vms/{vm.pk}/notes/")) as resp:
        notes.locator("button[type=submit]").click()
    assert resp.value.status == 200
    md = page.locator("#vm-notes .md")
    expect(md.locator("h2")).to_have_text("Runbook")
    expect(md.locator("strong")).to_have_text("Owner")
    expect(md.locator("li")).to_have_count(2)
    expect(md.locator('a[href="https://example.com/docs"]')).to_have_attribute(
        "rel", "noopener noreferrer nofollow"
    )
    assert md.locator("script, img, [onerror]").count() == 0
    assert md.locator('a[href^="javascript"]').count() == 0
    md.locator("a", has_text="click me").click()  # a link with no href: nothing runs
    assert page.evaluate("window.__pwned") is None
    shot(page, "look-notes")

    # Kept: the page read again renders the same, and the source is what was typed.
    vm.refresh_from_db()
    assert "<script>" in vm.notes
    page.reload()
    expect(page.locator("#vm-notes .md h2")).to_have_text("Runbook")
    assert page.locator("#vm-notes .md script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_notes_panel_offers_no_edit_to_a_viewer(
    live_host, live_server, open_look, tenant, make_member
):
    from tests.conftest import grant_host
    from vms.models import VirtualMachine

    vm = first_vm(live_host)
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=tenant, notes="*read me*")
    grant_host(tenant, live_host)
    make_member(tenant, "viewer", "acme-viewer")
    page = open_look()
    _log_in(page, live_server.url, "acme-viewer", "pw", start="/")
    page.goto(f"{live_server.url}/vms/{vm.pk}/")
    expect(page.locator("#vm-notes .md em")).to_have_text("read me")
    expect(page.locator("#vm-notes .notes-edit")).to_have_count(0)


def test_tag_colours_show_in_the_tree_grouped_by_tag(live_host, live_server, open_look):
    from panel.models import TagColour
    from vms.models import VirtualMachine

    vms = list(VirtualMachine.objects.filter(host=live_host, gone=False).order_by("name"))
    web, db = vms[0], vms[1]
    VirtualMachine.objects.filter(pk=web.pk).update(tags=["web", "prod"])
    VirtualMachine.objects.filter(pk=db.pk).update(tags=["prod"])
    TagColour.objects.create(tag="web", colour="green")
    TagColour.objects.create(tag="prod", colour="#cf3a2f")
    page = open_look()
    base = live_server.url
    log_in(page, base)
    tree = page.locator("#tree")
    expect(tree.locator('.node[data-node="tags"]')).to_be_hidden()

    page.click('button[data-tree-group="tag"]')
    tags = tree.locator('.node[data-node="tags"]')
    expect(tags).to_be_visible()
    expect(tree.locator('.node[data-node="dc"]')).to_be_hidden()
    web_node = tags.locator('.node[data-node="tag-web"]')
    chip = web_node.locator(".tree-link .tag-c-green")
    expect(chip).to_have_text("web")
    assert background(page, '#tree .node[data-node="tag-web"] .tag') == "rgb(225, 244, 230)"
    expect(web_node.locator(".count")).to_have_text("1")
    prod_node = tags.locator('.node[data-node="tag-prod"]')
    expect(prod_node.locator(".count")).to_have_text("2")
    expect(prod_node.locator(".tag-dot circle")).to_have_attribute("fill", "#cf3a2f")
    untagged = tags.locator('.node[data-node="tag--"]')
    expect(untagged.locator(".count")).to_have_text(str(len(vms) - 2))

    # A tag's VMs load when it opens.
    prod_node.locator(":scope > .tree-row > .twisty").click()
    expect(prod_node.locator("a[data-vm-id]")).to_have_count(2)
    expect(prod_node.locator(f'a[data-vm-id="{db.pk}"]')).to_contain_text(db.name)
    shot(page, "look-tree-tags")

    # The grouping is kept; the VM's summary shows its chips in their colours too.
    page.goto(f"{base}/vms/{web.pk}/")
    expect(page.locator('#tree .node[data-node="tags"]')).to_be_visible()
    expect(page.locator("main .tag-c-green")).to_have_text("web")
    page.click('button[data-tree-group="host"]')
    expect(page.locator('#tree .node[data-node="dc"]')).to_be_visible()
    page.reload()
    expect(page.locator('#tree .node[data-node="tags"]')).to_be_hidden()


def test_dark_mode_follows_the_system_and_the_users_choice(live_host, live_server, open_look):
    base = live_server.url
    vm = first_vm(live_host)

    dark = open_look(color_scheme="dark")
    log_in(dark, base)
    assert background(dark) == DARK_BG
    assert background(dark, ".sidebar") == "rgb(27, 34, 40)"
    shot(dark, "look-dc-dark")
    dark.goto(f"{base}/vms/{vm.pk}/")
    expect(dark.locator("#vm-notes")).to_be_visible()
    shot(dark, "look-vm-dark")
    dark.goto(f"{base}/vms/create/")
    shot(dark, "look-wizard-dark")
    dark.goto(f"{base}/vms/{vm.pk}/?tab=tuning")
    assert background(dark, ".panel") == "rgb(27, 34, 40)"
    shot(dark, "look-tuning-dark")
    # "Light" in the user menu wins over the system's dark.
    dark.click("details[data-menu] > summary")
    dark.click('[data-theme-choice="light"]')
    assert background(dark) == LIGHT_BG

    light = open_look(color_scheme="light")
    log_in(light, base)
    assert background(light) == LIGHT_BG
    shot(light, "look-dc-light")
    light.click("details[data-menu] > summary")
    light.click('[data-theme-choice="dark"]')
    assert background(light) == DARK_BG
    expect(light.locator('[data-theme-choice="dark"]')).to_have_attribute("aria-pressed", "true")
    # Kept across pages, applied before the first paint (theme.js in <head>).
    light.goto(f"{base}/vms/{vm.pk}/")
    assert light.evaluate("document.documentElement.dataset.theme") == "dark"
    assert background(light) == DARK_BG
    light.click("details[data-menu] > summary")
    light.click('[data-theme-choice="system"]')
    assert background(light) == LIGHT_BG
    light.goto(f"{base}/vms/{vm.pk}/")
    expect(light.locator("[data-metrics] figure.chart").first).to_be_visible()
    shot(light, "look-vm-light")
    # The charts are drawn again in the new scheme's colours.
    light.click("details[data-menu] > summary")
    with light.expect_response(lambda r: "/metrics/" in r.url and "range=hour" in r.url):
        light.click('[data-theme-choice="dark"]')
    expect(light.locator("[data-metrics] figure.chart").first).to_be_visible()
    light.click('[data-theme-choice="system"]')  # the menu stays open on a choice
    light.goto(f"{base}/vms/create/")
    shot(light, "look-wizard-light")


def settled_box(locator) -> dict:
    """The element's box once it stops moving (a transition ends)."""
    last = None
    for _ in range(40):
        box = locator.bounding_box()
        if box == last:
            return box
        last = box
        time.sleep(0.05)
    return last


def no_overflow(page) -> None:
    """Nothing wider than the screen: not the page, nor the main column that scrolls (a wide
    table scrolls inside its own panel instead)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide"
    main = page.evaluate("[document.querySelector('.main').scrollWidth, innerWidth]")
    assert main[0] <= main[1], f"{page.url}: the main column is {main[0]} px wide"


def test_a_phone_gets_a_drawer_and_touch_sized_buttons(live_host, live_server, open_look):
    base = live_server.url
    vm = first_vm(live_host)
    page = open_look(viewport=PHONE, has_touch=True)
    log_in_phone(page, base)
    sidebar = page.locator(".sidebar")
    expect(sidebar).to_be_hidden()
    no_overflow(page)
    shot(page, "look-dc-390")

    # The menu button opens the tree as a drawer; a tree link navigates and closes it.
    toggle = page.locator("[data-drawer-toggle]")
    assert toggle.bounding_box()["height"] >= 40
    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    # It slides in (a short transition) and ends inside the screen.
    box = settled_box(sidebar)
    assert box["x"] == 0 and box["width"] <= PHONE["width"]
    host_link = page.locator(f'#tree a.tree-link[href="/hosts/{live_host.pk}/"]')
    expect(host_link).to_be_visible()
    shot(page, "look-drawer-390")
    host_link.click()
    expect(page).to_have_url(f"{base}/hosts/{live_host.pk}/")
    expect(sidebar).to_be_hidden()
    # The shade closes it too.
    toggle.click()
    expect(sidebar).to_be_visible()
    page.mouse.click(370, 400)
    expect(sidebar).to_be_hidden()

    page.goto(f"{base}/vms/{vm.pk}/")
    no_overflow(page)
    buttons = page.locator(".obj-actions [data-power]")
    assert buttons.count() >= 1
    for i in range(buttons.count()):
        height = buttons.nth(i).bounding_box()["height"]
        assert height >= 44, f"power button {i} is {height} px tall"
    console = page.locator(".tabs a", has_text="Console")
    if console.count():
        assert console.bounding_box()["height"] >= 44
    shot(page, "look-vm-390", full_page=True)

    for tab in ("hardware", "snapshots", "tasks"):
        page.goto(f"{base}/vms/{vm.pk}/?tab={tab}")
        no_overflow(page)
    # Lists: their tables scroll inside their panel, not the page.
    for url in (f"/hosts/{live_host.pk}/", "/hosts/", "/tasks/", "/tag-colours/", "/vms/"):
        page.goto(base + url)
        no_overflow(page)
    shot(page, "look-list-390")
    page.goto(f"{base}/vms/create/")
    no_overflow(page)
    shot(page, "look-wizard-390", full_page=True)
