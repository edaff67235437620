"""The search page in a real browser: Chromium (Debian's apt) driven headless by Playwright (PyPI)
against the API service and its own cluster. Sign in with a token, search by text, by image and
by DICOM, see the thumbnails, give feedback (and find its row in the database), see the drift
plots and the model provenance; a role restricted by RLS never sees a hidden row on the page.
Every expected list of results is the same search in SQL as the same role.

Usage: browser_suite.py WORKDIR PGPORT APIPORT
"""
import base64
import json
import os
import sys

import numpy as np
from playwright.sync_api import sync_playwright

sys.path.insert(0, os.path.dirname(__file__))
from suite import SHARED, check, finish, start_cluster, stop_cluster  # noqa: E402
import api_common as ac  # noqa: E402

WORK, PORT, API_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
K = 12
PNG_PATH = os.path.join(SHARED, "biomedclip/example_images", sorted(os.listdir(os.path.join(SHARED, "biomedclip/example_images")))[0])
DICOM_PATH = os.path.join(SHARED, "dicom", sorted(f for f in os.listdir(os.path.join(SHARED, "dicom")) if f.startswith("CT"))[0])


def sql_ids(role, query):
    with ac.connect(PORT) as c:
        c.execute(f"SET ROLE {role}")
        return [r[0] for r in c.execute("SELECT id FROM biomedclip_search('studies', %s, %s)", (json.dumps(query), K)).fetchall()]


def cards(page):
    page.wait_for_function(f"document.querySelectorAll('#results .card').length === {K}", timeout=20000)
    page.wait_for_function("[...document.querySelectorAll('#results .card')].every(c => c.querySelector('img') && c.querySelector('img').complete"
                           " && c.querySelector('img').naturalWidth > 0)", timeout=20000)
    return page.eval_on_selector_all("#results .card", """cs => cs.map(c => {
        const d = {}; const dts = c.querySelectorAll('dt'); const dds = c.querySelectorAll('dd');
        dts.forEach((dt, i) => d[dt.textContent] = dds[i].textContent);
        const img = c.querySelector('img');
        return {id: c.dataset.id, site: d.site, w: img ? img.naturalWidth : 0};
    })""")


def sign_in(page, role):
    page.goto(f"http://127.0.0.1:{API_PORT}/")
    if page.is_visible("#logout"):
        page.click("#logout")
    page.fill("#token", ac.token(role))
    page.click("#signin")
    page.wait_for_selector("#search:not([hidden])", timeout=10000)
    page.select_option("#collection", "studies")
    page.fill("#k", str(K))


def text_search(page, text):
    page.fill("#query-text", text)
    page.click("#search-button")
    return cards(page)


def main():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    data = start_cluster(os.path.join(WORK, "data"), PORT)
    api = None
    try:
        _, sites = ac.setup_database(PORT, np.random.default_rng(15))
        secret_file = os.path.join(WORK, "jwt_secret")
        open(secret_file, "wb").write(ac.SECRET)
        api = ac.Api(ac.write_config(os.path.join(WORK, "api.toml"), PORT, API_PORT, secret_file), f"http://127.0.0.1:{API_PORT}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True)
            # First under the page's own Content-Security-Policy, with locators only (they do not
            # evaluate strings in the page): the page's script, style and images must all load.
            strict = browser.new_page(viewport={"width": 1200, "height": 900})
            csp_errors = []
            strict.on("console", lambda m: csp_errors.append(m.text) if m.type == "error" else None)
            sign_in(strict, "ward_a")
            strict.fill("#query-text", "pleural effusion")
            strict.click("#search-button")
            strict.locator("#results .card img").nth(K - 1).wait_for(timeout=20000)
            check("under its own strict CSP the page signs in, searches and shows thumbnails, with no console error",
                  strict.locator("#results .card").count() == K and not csp_errors, f"{strict.locator('#results .card').count()} cards; {csp_errors[:2]}")
            strict.close()
            # Then with CSP bypassed for Playwright's own predicates (wait_for_function evaluates strings).
            page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
            console_errors = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{API_PORT}/")
            check("the page shows the not-a-medical-device notice", "not a medical device" in page.inner_text("#notice"), page.inner_text("#notice")[:60])
            page.fill("#token", ac.token("ward_a", key=b"a forged signature key 0123456789abcdef"))
            page.click("#signin")
            page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
            check("a forged token does not sign in (the page shows the API's 401)", "Sign-in failed" in page.inner_text("#login-error")
                  and page.is_hidden("#search"), page.inner_text("#login-error")[:80])

            sign_in(page, "ward_a")
            got = text_search(page, "pleural effusion")
            want = sql_ids("ward_a", {"text": "pleural effusion"})
            check("search by text: the page shows the same results as SQL as ward_a, each with its thumbnail",
                  [c["id"] for c in got] == want and all(c["w"] == 24 for c in got), f"{[c['id'] for c in got][:4]} vs {want[:4]}")
            check("no row hidden from ward_a by RLS appears on the page", all(c["site"] == "A" for c in got) and all(sites[int(c["id"])] == "A" for c in got),
                  str({c["site"] for c in got}))
            second = got[1]["id"]
            page.locator("#results .card").nth(1).locator("button.relevant").click()
            page.wait_for_function("document.querySelectorAll('#results .card')[1].querySelector('.fb').textContent.includes('relevant')")
            with ac.connect(PORT) as c:
                row = c.execute("SELECT f.role, f.action, f.result_id, f.result_rank, l.role FROM biomedclip.query_feedback f "
                                "JOIN biomedclip.query_log l USING (query_id) ORDER BY f.feedback_id DESC LIMIT 1").fetchone()
            check("the Relevant button records feedback: its row is in biomedclip.query_feedback (role, action, id, rank)",
                  row == ("ward_a", "relevant", second, 2, "ward_a"), str(row))

            page.set_input_files("#file", PNG_PATH)
            got = cards_after_file(page)
            want = sql_ids("ward_a", {"image": base64.b64encode(open(PNG_PATH, "rb").read()).decode()})
            check("search by image (a file chosen on the page) equals SQL", [c["id"] for c in got] == want, f"{[c['id'] for c in got][:4]} vs {want[:4]}")
            page.set_input_files("#file", DICOM_PATH)
            got = cards_after_file(page)
            want = sql_ids("ward_a", {"dicom": base64.b64encode(open(DICOM_PATH, "rb").read()).decode(), "window": "auto"})
            check("search by DICOM (recognised by its preamble on the page) equals SQL", [c["id"] for c in got] == want and page.is_visible("#window-label"),
                  f"{[c['id'] for c in got][:4]} vs {want[:4]}")

            sign_in(page, "ward_b")
            got = text_search(page, "pleural effusion")
            want = sql_ids("ward_b", {"text": "pleural effusion"})
            check("signed in as ward_b: SQL's results for ward_b, and only site B rows", [c["id"] for c in got] == want and all(c["site"] == "B" for c in got),
                  f"{[c['id'] for c in got][:4]} vs {want[:4]}")

            sign_in(page, "ward_a")
            with ac.connect(PORT) as c:
                c.execute("GRANT monitor TO ward_a")  # so the analyst's page can show the drift view
            page.click("#tab-drift")
            page.wait_for_selector("#drift-plots svg", timeout=10000)
            page.wait_for_function("document.getElementById('model').textContent.includes('manifest')")
            sha = ac.connect(PORT).execute("SELECT biomedclip_model_info() ->> 'manifest_sha256'").fetchone()[0]
            svgs = page.locator("#drift-plots svg").count()
            check("the drift view plots the report (median top-1 distance, PSI) and shows the model's manifest SHA-256",
                  svgs >= 2 and sha in page.inner_text("#model"), f"{svgs} plots")
            unexpected = [e for e in console_errors if "status of 401" not in e]  # the forged sign-in above
            check("the page ran without console errors (besides the forged sign-in's 401)", not unexpected, str(unexpected[:3]))
            browser.close()
    finally:
        if api:
            api.stop()
        stop_cluster(data)
    finish()


def cards_after_file(page):
    page.wait_for_function("document.getElementById('search-status').textContent.includes(' for ')", timeout=20000)
    return cards(page)


main()
