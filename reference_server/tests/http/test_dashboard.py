"""The dashboard's list in a real browser (Debian's chromium, Playwright):
counts, filters, search, enqueue, cancel, retry, badges, theme, keyboard."""

from __future__ import annotations

from browser_helpers import DOCS, SCREENSHOTS, expect, open_dashboard, playwright, row
from http_helpers import Server, wait_for

FAR = 4102444800000  # 2100: stays pending


def _count(page: playwright.Page, state: str) -> playwright.Locator:
    return page.locator(f'#counts button[data-state="{state}"] .count')


def test_the_token_leaves_the_address_bar(page: playwright.Page) -> None:
    assert "token" not in page.url


def test_a_wrong_token_asks_for_the_right_one(browser: playwright.Browser, server: Server) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/#token=wrong-token-0123456789")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", server.token)
    page.click("#login button")
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#login")).to_be_hidden()
    context.close()


def test_counts_by_state_follow_the_jobs_live(page: playwright.Page, server: Server) -> None:
    counts = server.call("GET", "/api/counts").body["counts"]
    expect(_count(page, "pending")).to_have_text(str(counts["pending"]))
    job = server.enqueue("later", runAt=FAR)
    expect(_count(page, "pending")).to_have_text(str(counts["pending"] + 1))
    server.call("POST", f"/api/jobs/{job['id']}/cancel")
    expect(_count(page, "pending")).to_have_text(str(counts["pending"]))
    expect(_count(page, "cancelled")).to_have_text(str(counts["cancelled"] + 1))
    total = server.call("GET", "/api/counts").body["total"]
    expect(_count(page, "")).to_have_text(str(total))


def test_filter_by_state_and_by_name(page: playwright.Page, server: Server) -> None:
    later = server.enqueue("later", runAt=FAR)
    crash = server.enqueue("crash")
    server.wait_for_status(crash["id"], "failed")
    page.select_option("#filter-name", "later")
    expect(row(page, crash["id"])).to_have_count(0)
    expect(row(page, later["id"])).to_be_visible()
    expect(page.locator("#jobs tbody td.name").filter(has_not_text="later")).to_have_count(0)
    page.locator('#counts button[data-state="failed"]').click()
    expect(page.locator('#counts button[data-state="failed"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(row(page, later["id"])).to_have_count(0)
    page.select_option("#filter-name", "crash")
    expect(row(page, crash["id"])).to_be_visible()
    expect(page.locator("#jobs tbody tr:not([data-status=failed])")).to_have_count(0)
    page.select_option("#filter-status", "")
    page.select_option("#filter-name", "")
    expect(row(page, later["id"])).to_be_visible()
    expect(row(page, crash["id"])).to_be_visible()


def test_search_by_job_id_opens_its_page(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("later", runAt=FAR)
    page.fill("#search-id", "j_doesnotexist")
    page.press("#search-id", "Enter")
    expect(page.locator("#search-error")).to_have_text("no job with id j_doesnotexist")
    page.fill("#search-id", f"  {job['id']} ")
    page.click("#search button")
    expect(page.locator("#job-view")).to_be_visible()
    expect(page.locator("#job-title")).to_have_text(f"later {job['id']}")
    assert page.url.endswith(f"#/jobs/{job['id']}")


def test_enqueue_checks_the_json_before_sending_it(page: playwright.Page, server: Server) -> None:
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.click("#enqueue-panel summary")
    page.select_option("#job-name", "later")
    page.fill("#job-data", '{"size": 3,')
    expect(page.locator("#job-data")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#enqueue-error")).to_contain_text("data is not JSON")
    expect(page.locator("#enqueue-submit")).to_be_disabled()
    page.press("#job-priority", "Enter")  # submitting another way sends nothing either
    assert posts == []
    page.fill("#job-data", '{"size": 3}')
    expect(page.locator("#job-data")).not_to_have_attribute("aria-invalid", "true")
    page.fill("#job-priority", "4")
    page.click("#enqueue-submit")
    link = page.locator("#enqueue-done a")
    expect(link).to_be_visible()
    job = server.job(link.inner_text())
    assert (job["name"], job["data"], job["priority"]) == ("later", {"size": 3}, 4)
    assert len(posts) == 1


def test_enqueue_and_watch_the_bar_move_to_completion(page: playwright.Page) -> None:
    page.click("#enqueue-panel summary")
    page.select_option("#job-name", "thumbnails")
    page.fill("#job-data", '{"steps": 8, "delayMs": 150}')
    page.click("#enqueue-submit")
    job_id = page.locator("#enqueue-done a").inner_text()
    bar = row(page, job_id).locator("[role=progressbar]")
    page.wait_for_function(
        "bar => { const v = Number(bar.getAttribute('aria-valuenow')); return v > 0 && v < 100; }",
        arg=bar.element_handle(),
    )
    expect(row(page, job_id)).to_have_attribute("data-status", "completed")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(row(page, job_id).locator(".message")).to_have_text("thumbnail 8 of 8")


def test_cancel_a_running_job_from_the_list(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 50})
    line = row(page, job["id"])
    expect(line.locator(".message")).not_to_be_empty()  # connected: the cancel is graceful
    line.get_by_role("button", name=f"cancel {job['id']}").click()
    expect(line).to_have_attribute("data-status", "cancelled")
    expect(line.locator("button.cancel")).to_be_hidden()
    assert server.job(job["id"])["status"] == "cancelled"


def test_retry_a_failed_job_from_the_list(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("crash", {"again": True})
    line = row(page, job["id"])
    expect(line).to_have_attribute("data-status", "failed")
    expect(line.locator(".message")).to_have_text("Process exited with code 3")
    line.get_by_role("button", name=f"retry {job['id']}").click()
    retried = page.locator("#notice a").inner_text()
    assert retried != job["id"]
    assert server.job(retried)["data"] == {"again": True}
    expect(row(page, retried)).to_be_visible()


def test_each_job_has_a_badge_of_its_negotiated_features(
    page: playwright.Page, server: Server
) -> None:
    extended = server.enqueue("thumbnails", {"steps": 2, "delayMs": 10})
    v1 = server.enqueue("v1", {"steps": 1, "terminal": "completed"})
    for job in (extended, v1):
        server.wait_for_status(job["id"], "completed")
    badges = row(page, extended["id"]).locator(".features .feature")
    expect(badges).to_have_text(["auth", "checkpoint", "control", "replay", "spool"])
    expect(row(page, v1["id"]).locator(".features .feature")).to_have_text(["v1"])


def test_stale_1_a_silent_worker_is_marked_stale_until_it_ends(
    page: playwright.Page, server: Server
) -> None:
    job = server.enqueue("silent", {"silent_ms": 60000})  # never says a word
    badge = row(page, job["id"]).locator(".pill.stale")
    expect(badge).to_be_visible()  # after its 4 s heartbeat timeout
    page.evaluate("path => { location.hash = path; }", f"#/jobs/{job['id']}")
    expect(page.locator("#job-status .pill.stale")).to_be_visible()
    server.call("POST", f"/api/jobs/{job['id']}/cancel")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    page.evaluate("location.hash = '#/'")
    expect(row(page, job["id"])).to_have_attribute("data-status", "cancelled")
    expect(badge).to_have_count(0)


def test_the_theme_follows_the_system(browser: playwright.Browser, server: Server) -> None:
    lightness = {}
    for scheme in ("light", "dark"):
        page = open_dashboard(browser, server, scheme=scheme)
        rgb = page.evaluate(
            "getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number)"
        )
        lightness[scheme] = sum(rgb[:3]) / 3
        page.context.close()
    assert lightness["light"] > 200 and lightness["dark"] < 60


def test_every_control_is_reachable_by_keyboard(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("later", runAt=FAR)
    expect(row(page, job["id"])).to_be_visible()
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => { const e = document.activeElement;
              const style = getComputedStyle(e);
              return [e.tagName, e.id || e.getAttribute('data-state') || e.textContent.trim(),
                      style.outlineStyle !== 'none' && style.outlineWidth !== '0px']; }"""
        )
        reached.append(focused)
        if focused[1] == job["id"]:
            break
    tags = {tag for tag, _, _ in reached}
    names = {name for _, name, _ in reached}
    assert tags <= {"A", "BUTTON", "SELECT", "INPUT", "SUMMARY", "TEXTAREA"}
    assert {"pending", "filter-status", "filter-name", "search-id", job["id"]} <= names
    assert all(outlined for _, _, outlined in reached)  # a visible focus ring on each
    page.keyboard.press("Enter")
    expect(page.locator("#job-title")).to_have_text(f"later {job['id']}")


def test_screenshot_of_the_dashboard(page: playwright.Page, server: Server) -> None:
    """docs/dashboard.png, for the README: only with EXTJOB_SCREENSHOTS=1."""
    jobs = [
        server.enqueue("thumbnails", {"steps": 6, "delayMs": 30}),
        server.enqueue("v1", {"steps": 2, "terminal": "completed"}),
        server.enqueue("crash"),
        server.enqueue("thumbnails", {"steps": 400, "delayMs": 100}),
        server.enqueue("later", runAt=FAR),
    ]
    for job in jobs[:3]:
        server.wait_for_status(job["id"], "completed", "failed")
    wait_for(lambda: (server.job(jobs[3]["id"])["progress"]["percent"] or 0) > 1)
    expect(row(page, jobs[3]["id"])).to_have_attribute("data-status", "running")
    expect(row(page, jobs[0]["id"]).locator(".feature").first).to_have_text("auth")
    if SCREENSHOTS:
        page.screenshot(path=DOCS / "dashboard.png")
    server.call("POST", f"/api/jobs/{jobs[3]['id']}/cancel")
