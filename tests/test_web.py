"""The web viewer (llm consortium serve), driven in a real headless Chromium.

Runs are made by llm's real client against the simulated provider, and
recorded by the plugin's recorder, in this process or another one (llm -m);
the viewer runs in this process (or as ``llm consortium serve``) on a free
loopback port. The browser is Debian's chromium, driven through
/usr/bin/chromedriver, so selenium never downloads anything.
"""

import http.client
import os
import re
import subprocess
import threading
import time

import pytest

from helpers import db_rows, invoke, llm_process, python_run
from llm_consortium import ConsortiumOrchestrator, RunRecorder
from llm_consortium.storage import store
from llm_consortium.evaluation.simulator import arbiter_xml

FAST = {"retry_backoff": 0.01}
XSS = ('Careful: <script>window.__xss = "script"</script> <img src="x" onerror="window.__xss = \'img\'"> '
       '[click me](javascript:window.__xss=1) <a href="javascript:window.__xss=2">a link</a>')


def record(models, name=None, prompt="What is the capital of France?", method="arbiter", **settings):
    """One run, recorded as the plugin records any run; returns its id."""
    orchestrator = ConsortiumOrchestrator(models=models, method=method, observers=[RunRecorder(name)],
                                          **{"arbiter": "judge", **FAST, **settings})
    return orchestrator.orchestrate_sync(prompt)["metadata"]["run_id"]


def save(name, models, **settings):
    store.save_config(name, {"models": models, "arbiter": "judge", **FAST, **settings})


def reviewer(answer):
    """A member answering ``answer``; asked to review, it ranks the
    responses by the quality number their text states, best first."""

    def reply(request):
        if "FINAL RANKING:" not in request.user:
            return answer
        shown = re.findall(r"BEGIN (Response [A-Z]+)>>>\n(.*?)\n<<<", request.user, re.S)
        best = sorted(shown, key=lambda item: int(re.search(r"quality (\d)", item[1]).group(1)), reverse=True)
        return "FINAL RANKING:\n" + "\n".join(f"{i}. {label}" for i, (label, _) in enumerate(best, 1))

    return reply


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not look for a driver online
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(1400, 1000)
    yield driver
    driver.quit()


@pytest.fixture
def viewer(sim, browser):
    """The viewer in this process, on a free port: its base URL."""
    from llm_consortium.faces.web.app import listen, server

    sock = listen("127.0.0.1", 0)
    running = server(sock, "127.0.0.1")
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.02)
    browser.set_window_size(1400, 1000)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    running.should_exit = True
    thread.join(10)


def wait(browser, condition, seconds=30):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: condition())


def css(browser, selector):
    return browser.find_elements("css selector", selector)


def text(browser, selector):
    """The visible text of every element ``selector`` matches, read at one moment (a live page changes)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText).join(' ')", selector)


# The runs list


@pytest.mark.browser
def test_runs_list_is_newest_first_and_filters(sim, viewer, browser):
    sim.add_many(["m1", "m2"], reply="<answer>Paris</answer>")
    sim.add("judge", reply=arbiter_xml("Paris", 0.9))
    first = record(["m1", "m2"], "pair", "What is the capital of France?")
    second = record(["m1", "m2"], "voters", "Name the capital of France, in one word", method="vote")
    third = record(["m1"], None, "How tall is the Eiffel tower?")

    browser.get(viewer + "/")
    rows = css(browser, "table.runs tbody tr")
    assert [row.get_attribute("data-run") for row in rows] == [third, second, first]
    cells = [c.text for c in rows[1].find_elements("css selector", "td")]
    assert cells[1:8] == ["Name the capital of France, in one word", "voters", "vote", "success", "1.00",
                          "2 of 2 agree, 2 of 2 answered", "1"]

    browser.find_element("name", "q").send_keys("CAPITAL")
    browser.find_element("css selector", ".filters button").click()
    wait(browser, lambda: len(css(browser, "table.runs tbody tr")) == 2)
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("name", "method")).select_by_value("vote")
    browser.find_element("css selector", ".filters button").click()
    wait(browser, lambda: [r.get_attribute("data-run") for r in css(browser, "table.runs tbody tr")] == [second])
    assert "method=vote" in browser.current_url and "q=CAPITAL" in browser.current_url

    browser.get(viewer + "/?status=failed")
    assert "No run matches these filters" in text(browser, "main")


# A run's page, for each method


@pytest.mark.browser
def test_arbiter_run_page_shows_rounds_members_side_by_side_and_the_timeline(sim, viewer, browser):
    sim.add("m1", reply="Paris, **certainly**.")
    sim.add("m2", status=400, error_message="the server melted")
    sim.add("m3", reply="Lyon?")
    sim.add("judge", reply=[
        arbiter_xml("Paris, maybe", 0.5, analysis="Split.", dissent="m3 says Lyon.", refinement_areas=["Check m3"]),
        arbiter_xml("It is **Paris**.\n\n- the capital\n- the largest city", 0.95, analysis="Agreed now."),
    ])
    run_id = record(["m1", "m2", "m3"], "trio")

    browser.get(f"{viewer}/runs/{run_id[:8]}")
    assert browser.find_element("css selector", ".run-head h1").text == "What is the capital of France?"
    answer = browser.find_element("css selector", "section.answer .markdown")
    assert answer.find_element("css selector", "strong").text == "Paris"
    assert [li.text for li in answer.find_elements("css selector", "li")] == ["the capital", "the largest city"]
    assert [s.find_element("css selector", "h2").text.split(" · ")[0] for s in css(browser, "section.round")] == [
        "Round 1 confidence 0.50", "Round 2 confidence 0.95"]
    panels = css(browser, "#round-1 .member")
    assert [p.find_element("css selector", "h3").text for p in panels] == ["m1 #1", "m2 #1", "m3 #1"]
    assert len({p.location["y"] for p in panels}) == 1  # side by side
    assert "the server melted" in panels[1].find_element("css selector", ".error").text
    assert panels[0].find_element("css selector", "strong").text == "certainly"
    assert re.fullmatch(r"\d+\.\d\d s · \d+ tokens \(\d+ in, \d+ out\) · cost unknown",
                        panels[0].find_element("css selector", ".meta").text)
    assert len(css(browser, "#round-2 .member")) == 2  # m2 failed: not asked again
    assert "Split." in text(browser, "#round-1 .analysis")
    assert "m3 says Lyon." in text(browser, "#round-1 .dissent")
    assert text(browser, "#round-1 .refinement li") == "Check m3"
    # every call in the timeline, a bar and a row each
    rows = [[td.text for td in tr.find_elements("css selector", "td")] for tr in css(browser, "table.calls tbody tr")]
    assert len(css(browser, "svg.timeline-chart rect")) == len(rows) == 7
    assert [(r[0], r[1], r[2]) for r in rows if r[1] == "arbiter"] == [("1", "arbiter", "judge #1"),
                                                                       ("2", "arbiter", "judge #1")]
    assert [r[-1] for r in rows].count("ok") == 6 and "the server melted" in rows[1][-1] + rows[0][-1] + rows[2][-1]
    # raw prompts on demand
    raw = browser.find_element("css selector", "#round-2 details.raw")
    assert not raw.find_element("css selector", "pre.reply").is_displayed()
    raw.find_element("css selector", "summary").click()
    replies = [r.text for r in raw.find_elements("css selector", "pre.reply")]
    assert sorted(replies[:2]) == ["Lyon?", "Paris, **certainly**."] and "<synthesis>It is **Paris**." in replies[2]
    assert "What is the capital of France?" in raw.find_element("css selector", "details").get_attribute(
        "textContent")  # each call's prompt, one more click away
    # the id and how to inspect it
    assert browser.find_element("css selector", ".run-id").text == run_id

    # narrow screens: tabs, one member at a time
    browser.set_window_size(480, 900)
    visible = lambda: [p.find_element("css selector", "h3").text for p in  # noqa: E731
                       css(browser, "#round-2 .member") if p.is_displayed()]
    assert visible() == ["m1 #1"]
    browser.find_element("css selector", '#round-2 .tab[data-tab="m3 #1"]').click()
    assert visible() == ["m3 #1"]


@pytest.mark.browser
def test_council_run_page_shows_the_ranking_with_intervals(sim, viewer, browser):
    for name, quality in (("a", 1), ("b", 3), ("c", 2)):
        sim.add(name, reply=reviewer(f"Answer of quality {quality}."))
    sim.add("judge", reply=arbiter_xml("The chair's answer.", 0.9))
    run_id = record(["a", "b", "c"], "council", method="council")

    browser.get(f"{viewer}/runs/{run_id}")
    rows = [[td.text for td in tr.find_elements("css selector", "td")] for tr in css(browser, "table.ranking tbody tr")]
    assert [row[1] for row in rows] == ["b #1", "c #1", "a #1"]
    assert rows[0][2] == "1.00" and re.fullmatch(r"\[\d\.\d\d, \d\.\d\d\]", rows[0][3]) and rows[0][4] == "2"
    roles = [tr.find_elements("css selector", "td")[1].text for tr in css(browser, "table.calls tbody tr")]
    assert sorted(roles) == ["arbiter", "member", "member", "member", "reviewer", "reviewer", "reviewer"]
    assert "The chair's answer." in text(browser, "section.answer")


@pytest.mark.browser
def test_vote_run_page_shows_the_tally(sim, viewer, browser):
    sim.add_many(["v1", "v2"], reply="<answer>42</answer>")
    sim.add("v3", reply="<answer>41</answer>")
    sim.add("judge", reply=arbiter_xml("unused", 0.9))
    run_id = record(["v1", "v2", "v3"], "voters", "What is 6*7?", method="vote", confidence_threshold=0.6)

    browser.get(f"{viewer}/runs/{run_id}")
    rows = [[td.text for td in tr.find_elements("css selector", "td")[:2]] for tr in css(browser, "table.tally tr")]
    assert rows == [["42", "2"], ["41", "1"]]
    assert css(browser, "table.tally tr.winner")[0].text.startswith("42")
    assert sim.calls("judge") == []  # the majority decided; no arbiter call in the timeline either
    assert "arbiter" not in text(browser, "table.calls")


@pytest.mark.browser
def test_a_partial_run_says_so_with_its_counts(sim, viewer, browser):
    """A run with a failed member was shown as a success (issue 19)."""
    sim.add("p1", reply="Paris")
    sim.add("p2", status=401, error_message="bad key")
    sim.add("judge", reply=arbiter_xml("Paris", 1.0))
    run_id = record(["p1", "p2"])

    browser.get(viewer)
    assert "partial" in text(browser, "table.runs") and "1 of 2 agree, 1 of 2 answered" in text(browser, "table.runs")
    browser.get(f"{viewer}/runs/{run_id}")
    assert "partial" in text(browser, "span.status")
    assert "1 of 2 members failed (p2#1)" in text(browser, "p.notice")


# Live


@pytest.mark.slow  # another process runs while the viewer shows it
@pytest.mark.browser
def test_a_run_from_another_process_updates_in_place(sim, viewer, browser):
    sim.add("quick", reply="The quick answer.")
    sim.add("slow", reply="The slow answer.", latency=2.5)
    sim.add("judge", reply=arbiter_xml("Both agree.", 0.9), latency=1.5)
    save("pair", ["quick", "slow"])
    process = llm_process("-m", "pair", "Live question?", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        run_id = wait(browser, lambda: next((r.id for r in store.list_runs(1)), None))
        browser.get(f"{viewer}/runs/{run_id}")
        browser.execute_script("window.__sameDocument = true")
        assert "running" in text(browser, ".run-head .status")
        wait(browser, lambda: "The quick answer." in text(browser, ".member"))
        assert "The slow answer." not in text(browser, ".member")  # it arrived while the other was still out
        assert "Waiting for slow #1" in text(browser, "#round-1")  # pending members, by name
        words, facts = banner(browser)  # the banner too, which updates with each change
        assert (words, facts["Progress"], facts["Waiting for"]) == ("Running", "Round 1: 1 of 2 answered", "slow #1")
        assert browser.title.startswith("Round 1: 1 of 2 answered · Live question?")
        clock = browser.find_element("css selector", ".verdict .elapsed").text
        wait(browser, lambda: browser.find_element("css selector", ".verdict .elapsed").text != clock, 3)  # it ticks
        wait(browser, lambda: "The slow answer." in text(browser, ".member"))
        wait(browser, lambda: "Both agree." in text(browser, "section.answer"))
        wait(browser, lambda: browser.find_element("tag name", "main").get_attribute("data-state") == "ended")
        assert text(browser, ".run-head .status") == "success" and text(browser, ".verdict-words") == "Answered"
        assert browser.title == "Answered · Live question? · llm-consortium"
        assert css(browser, "[data-since]") == [] and "Waiting" not in text(browser, "main")  # a clean end
        assert css(browser, ".llm-cid") and css(browser, "section.continue")  # logged by llm -m just after it
        assert browser.execute_script("return window.__sameDocument") is True  # never reloaded
    finally:
        process.wait(30)
    assert process.returncode == 0


# Asking, and continuing


@pytest.mark.browser
def test_ask_watch_and_continue_the_conversation(sim, viewer, browser):
    sim.add("m1", reply=lambda request: f"m1 heard {len(request.messages)} messages", latency=0.5)
    sim.add("m2", reply="m2 answers")
    sim.add("judge", reply=lambda request: arbiter_xml(f"Answer to: {request.user.count('[user]')} earlier turns",
                                                       0.9))
    save("team", ["m1", "m2"])
    save("alpha", ["m2"])  # listed first: the Continue form offered it, not the run's own (issue 23)
    from selenium.webdriver.support.ui import Select

    browser.get(viewer + "/ask")
    Select(browser.find_element("name", "consortium")).select_by_value("team")
    browser.find_element("name", "prompt").send_keys("First question?")
    browser.find_element("css selector", "form.ask button").click()
    wait(browser, lambda: "/runs/" in browser.current_url)
    first = browser.current_url.rsplit("/", 1)[1]
    assert text(browser, ".run-head h1") == "First question?"
    wait(browser, lambda: "Answer to: 0 earlier turns" in text(browser, "section.answer"))
    wait(browser, lambda: css(browser, ".llm-cid"))  # logged in llm's conversation
    cid = browser.find_element("css selector", ".llm-cid").text.split()[-1]
    chosen = Select(browser.find_element("css selector", "section.continue select"))
    assert chosen.first_selected_option.get_attribute("value") == "team"

    browser.find_element("css selector", "section.continue textarea").send_keys("And a follow-up?")
    browser.find_element("css selector", "section.continue button").click()
    wait(browser, lambda: "/runs/" in browser.current_url and not browser.current_url.endswith(first))
    wait(browser, lambda: "Answer to: 1 earlier turns" in text(browser, "section.answer"))
    wait(browser, lambda: css(browser, ".turns a"))
    assert browser.find_element("css selector", ".llm-cid").text.split()[-1] == cid  # the same conversation
    assert browser.find_element("css selector", ".turns a").get_attribute("href").endswith(f"/runs/{first}")
    assert "m1 heard 3 messages" in text(browser, ".member")  # first question, its answer, the follow-up
    follow_up = sim.calls("m1")[-1]
    assert [m["role"] for m in follow_up.messages if m["role"] != "system"] == ["user", "assistant", "user"]
    assert "Answer to: 0 earlier turns" in follow_up.messages[-2]["content"]
    rows = store.list_runs(None)
    assert [r.prompt for r in rows] == ["And a follow-up?", "First question?"]
    assert all(r.name == "team" and r.status == "success" for r in rows)


@pytest.mark.browser
def test_ask_mistakes_are_said_on_the_page(sim, viewer, browser):
    save("ghosts", ["no-such-model"])
    browser.get(viewer + "/ask")
    browser.find_element("name", "prompt").send_keys("Anyone there?")
    browser.find_element("css selector", "form.ask button").click()
    wait(browser, lambda: css(browser, "main .error"))
    assert "no-such-model" in text(browser, "main .error")
    assert browser.find_element("name", "prompt").get_attribute("value") == "Anyone there?"
    assert store.list_runs() == [] and sim.requests == []


# Model text is text


@pytest.mark.slow  # another process runs while the viewer shows it
@pytest.mark.browser
def test_hostile_model_text_runs_nothing_live_or_not(sim, viewer, browser):
    sim.add("evil", reply=XSS)
    sim.add("late", reply="fine", latency=1.5)
    sim.add("judge", reply=arbiter_xml(XSS, 0.9, analysis=XSS, dissent=XSS))
    save("mixed", ["evil", "late"])
    process = llm_process("-m", "mixed", "<script>window.__xss='prompt'</script>",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        run_id = wait(browser, lambda: next((r.id for r in store.list_runs(1)), None))
        browser.get(f"{viewer}/runs/{run_id}")
        wait(browser, lambda: "Careful:" in text(browser, ".member"))  # arrived through a live update
        wait(browser, lambda: browser.find_element("tag name", "main").get_attribute("data-state") == "ended")
    finally:
        process.wait(30)
    for page in (f"{viewer}/runs/{run_id}", viewer + "/"):  # live, then loaded whole; and the list
        if page != browser.current_url:
            browser.get(page)
        assert browser.execute_script("return window.__xss") is None
        assert css(browser, "main script, main img, main [onerror], main a[href^='javascript']") == []
    assert "<script>window.__xss='prompt'</script>" in text(browser, "table.runs")
    browser.get(f"{viewer}/runs/{run_id}")
    shown = text(browser, ".member")
    assert '<script>window.__xss = "script"</script>' in shown  # shown as the text it is
    assert "<img src=\"x\" onerror=" in shown and "[click me](javascript:window.__xss=1)" in shown
    assert '<script>window.__xss = "script"</script>' in text(browser, "section.answer")
    assert browser.execute_script("return window.__xss") is None


# Safe by default, over plain HTTP


def serve_command():
    """``llm consortium serve --port 0`` in a process of its own: (process, port)."""
    process = llm_process("consortium", "serve", "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    line = process.stderr.readline()
    found = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
    assert found, line
    return process, int(found.group(1))


def request(port, method, path, host=None, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # a cold server on a busy machine
    connection.request(method, path, body=body, headers={"Host": host or f"127.0.0.1:{port}", **(headers or {})})
    response = connection.getresponse()
    return response.status, response.read().decode(), dict(response.getheaders())


@pytest.mark.slow  # a server in a process of its own
def test_serve_refuses_foreign_hosts_and_posts_without_its_token(sim):
    save("team", ["m1"])
    process, port = serve_command()
    try:
        status, body, headers = request(port, "GET", "/")
        assert status == 200 and "Runs" in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert request(port, "GET", "/", host=f"localhost:{port}")[0] == 200
        assert request(port, "GET", "/", host=f"[::1]:{port}")[0] == 200
        for foreign in ("attacker.example", f"attacker.example:{port}", f"localhost.attacker.example:{port}"):
            assert request(port, "GET", "/", host=foreign)[:2] == (400, "Refused: unknown Host header")
        assert request(port, "GET", "/static/viewer.js")[0] == 200
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert request(port, "POST", "/ask", body="consortium=team&prompt=hi", headers=form)[0] == 403
        token = re.search(r'name="csrf" value="([^"]+)"', request(port, "GET", "/ask")[1]).group(1)
        assert request(port, "POST", "/ask", body=f"consortium=team&prompt=hi&csrf={token}x", headers=form)[0] == 403
        cross = {**form, "Origin": "http://attacker.example"}
        assert request(port, "POST", "/ask", body=f"consortium=team&prompt=hi&csrf={token}", headers=cross)[0] == 403
        assert sim.requests == []
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow  # a fresh interpreter without starlette
def test_serve_without_the_web_extra_says_what_to_install(sim):
    code = "import sys; sys.modules['starlette'] = None; from llm.cli import cli; cli(['consortium', 'serve'])"
    result = python_run(code, timeout=60)
    assert result.returncode == 1
    # The packages of the web extra, from the plugin's installed metadata, into llm's own environment.
    assert result.stderr == ("Error: llm consortium serve needs the web extra (starlette is missing): "
                             "llm install 'starlette>=0.37' 'uvicorn>=0.29' 'markdown-it-py>=3'\n")


def test_serve_says_so_when_the_port_is_taken(sim):
    from llm_consortium.faces.web.app import listen

    taken = listen("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        result = invoke("consortium", "serve", "--port", str(port))
    finally:
        taken.close()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: Cannot listen on 127.0.0.1:{port}: ") and result.stderr.count("\n") == 1


# Verdict first (issue 23)


def record_ended(models, **settings):
    """``record``, for a run that may end without an answer (it raises): the id it was recorded under."""
    from llm_consortium.core.config import ConsortiumError

    try:
        return record(models, **settings)
    except ConsortiumError:
        return store.list_runs(1)[0].id


def banner(browser):
    """The banner's status words, and its facts as {label: value}."""
    facts = browser.execute_script(
        "return Array.from(document.querySelectorAll('.verdict-facts > div'),"
        " d => [d.querySelector('dt').innerText, d.querySelector('dd').innerText])")
    return text(browser, ".verdict-words"), dict(facts)


@pytest.mark.browser
def test_the_banner_says_each_status_in_words_with_its_facts(sim, viewer, browser):
    sim.add_many(["a1", "a2"], reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    sim.add("unsure", reply=arbiter_xml("Paris?", 0.5))
    sim.add("mute", reply="I will not use the format.")
    sim.add("lyon", reply="Lyon, I believe, and nothing else.")
    sim.add("broken", status=401, error_message="bad key")
    sim.add("pricey", model_name="gpt-4o-2024-08-06", reply="42")  # priced as gpt-4o
    sim.add("pricey-judge", model_name="gpt-4o", reply=arbiter_xml("42", 0.9))
    one_round = {"max_iterations": 1, "attempts": 1}
    runs = {
        "Answered": record_ended(["a1", "a2"]),
        "Below threshold": record_ended(["a1", "a2"], arbiter="unsure", confidence_threshold=0.8, **one_round),
        "Partial: 1 of 2 failed": record_ended(["a1", "broken"]),
        "No verdict": record_ended(["a1", "lyon"], arbiter="mute", **one_round),
        "Fallback decided": record_ended(["a1", "a2"], arbiter="mute", **one_round),
        "Failed": record_ended(["broken"], **one_round),
        "Budget stop": record_ended(["pricey"], arbiter="pricey-judge", max_cost=0.038,
                                    prompt=" ".join(["a"] * 8000)),
    }
    statuses = {"Answered": "success", "Below threshold": "below_threshold", "Partial: 1 of 2 failed": "partial",
                "No verdict": "no_verdict", "Fallback decided": "degraded", "Failed": "failed",
                "Budget stop": "budget"}
    seen = {}
    for words, run_id in runs.items():
        browser.get(f"{viewer}/runs/{run_id}")
        seen[words] = banner(browser)
        assert text(browser, ".verdict .status") == statuses[words]  # the word `runs --status` filters by
        assert browser.title.startswith(f"{words} · ")
        assert browser.find_element("css selector", ".verdict").get_attribute("class") == \
            f"verdict verdict-{statuses[words]}"
    assert {words: shown for words, (shown, _) in seen.items()} == {words: words for words in runs}
    facts = seen["Answered"][1]
    assert (facts["Confidence"], facts["Agreement"], facts["Answered"], facts["Cost"]) == (
        "0.90 (threshold 0.80)", "2 of 2 agree", "2 of 2",
        "cost unknown: 3 calls unpriced")  # the simulator's models have no price
    assert re.fullmatch(r"\d+\.\d s", facts["Time"])
    assert seen["Below threshold"][1]["Confidence"] == "0.50 (threshold 0.80)"
    assert seen["Partial: 1 of 2 failed"][1]["Answered"] == "1 of 2"
    assert seen["Budget stop"][1]["Cost"].startswith("$")  # priced: dollars, not "unknown"
    assert seen["Failed"][1]["Agreement"] == "agreement unknown"


@pytest.mark.browser
def test_members_carry_agree_and_dissent_badges_and_rounds_a_confidence_chart(sim, viewer, browser):
    sim.add_many(["m1", "m2"], reply="Paris.")
    sim.add("m3", reply="Lyon.")
    sim.add("m4", status=401, error_message="bad key")
    sim.add("quiet", reply="Paris.", no_usage=True)  # a model that reports no tokens
    sim.add("judge", reply=[arbiter_xml("Paris, maybe.", 0.5), arbiter_xml("Paris.", 0.95)])
    run_id = record(["m1", "m2", "m3", "m4", "quiet"], confidence_threshold=0.9, max_iterations=3)

    browser.get(f"{viewer}/runs/{run_id}")
    badges = {p.find_element("css selector", "h3").text: p.find_element("css selector", ".badge").text
              for p in css(browser, "#round-1 .member")}
    assert badges == {"m1 #1": "agrees · with m2 #1, quiet #1", "m2 #1": "agrees · with m1 #1, quiet #1",
                      "quiet #1": "agrees · with m1 #1, m2 #1", "m3 #1": "dissents · alone", "m4 #1": "failed"}
    assert len(css(browser, "#round-1 .badge-agrees")) == 3 and len(css(browser, "#round-1 .badge-dissents")) == 1
    quiet = browser.find_element("css selector", '#round-1 .member[data-panel="quiet #1"] .meta').text
    assert "tokens unknown" in quiet and "0 tokens" not in quiet  # unknown, as the CLI says, not 0
    assert "calls reported none" in browser.find_element("css selector", ".facts").text
    # recorded as unknown (NULL), so a run still going, read from its rows, says so too
    assert {row["input_tokens"] for row in db_rows("select input_tokens from consortium_calls where model = 'quiet'")} \
        == {None}
    _, facts = banner(browser)
    assert facts["Agreement"] == "3 of 5 agree" and facts["Confidence"] == "0.95 (threshold 0.90)"
    chart = browser.find_element("css selector", ".verdict svg.confidence-chart")
    assert chart.get_attribute("aria-label") == "Confidence by round: round 1: 0.50, round 2: 0.95 (threshold 0.90)"
    assert len(chart.find_elements("css selector", "circle")) == 2
    assert len(chart.find_elements("css selector", "line.threshold")) == 1
    assert css(browser, "script[src]")[0].get_attribute("src").endswith("/static/viewer.js")  # the chart needs none

    one = record(["m1"], max_iterations=1)
    browser.get(f"{viewer}/runs/{one}")
    assert css(browser, ".confidence-chart") == []  # one round: nothing to chart


@pytest.mark.browser
def test_missing_and_ambiguous_pages_are_styled_with_a_way_back(sim, viewer, browser):
    sim.add("m1", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    ids = []
    while len({run_id[0] for run_id in ids}) == len(ids):  # until two ids share a first character
        ids.append(record(["m1"], max_iterations=1))
    shared = next(run_id[0] for run_id in ids if [i[0] for i in ids].count(run_id[0]) > 1)
    for path, title, said in (("/runs/nosuchrun", "No such run", "No run matches 'nosuchrun'"),
                              (f"/runs/{shared}", "Ambiguous run id", "matches several runs"),
                              ("/no/such/page", "Not found", "Nothing is at /no/such/page")):
        status, body, headers = request(int(viewer.rsplit(":", 1)[1]), "GET", path)
        assert status == 404 and headers["content-type"].startswith("text/html")
        browser.get(viewer + path)
        assert browser.find_element("css selector", "main h1").text == title and said in text(browser, "main")
        assert css(browser, 'link[href="/static/viewer.css"]')  # styled like every page
        browser.find_element("link text", "Back to the runs").click()
        wait(browser, lambda: browser.current_url == viewer + "/")


# Phone and desktop, light and dark; accessibility (issue 23)

WIDE_WORDS = "Supercalifragilisticexpialidocious " * 3
TABLE = "| Option | What it does |\n|---|---|\n" + "".join(
    f"| `--option-number-{i}` | {WIDE_WORDS} |\n" for i in range(4))
AXE = os.environ.get("AXE_CORE_JS") or os.path.join(os.path.dirname(__file__), "..", ".ci-node", "node_modules",
                                                     "axe-core", "axe.min.js")


# What sticks out furthest to the right, to say why a page scrolls sideways.
WIDEST = ("return Array.from(document.querySelectorAll('body *')).map(e => [e.getBoundingClientRect().right,"
          " e.tagName + '.' + e.className]).sort((a, b) => b[0] - a[0]).slice(0, 3).join(' | ')")


def emulate(browser, width, dark):
    """A ``width`` × 800 viewport (a phone's, below 760), light or dark (prefers-color-scheme)."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 760})
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})


@pytest.fixture
def screens(browser):
    yield emulate
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def axe_violations(browser) -> list[str]:
    """axe-core's serious and critical violations on the page, as "rule: where"."""
    if not browser.execute_script("return !!window.axe"):
        with open(AXE, encoding="utf-8") as source:
            browser.execute_script(source.read())
    found = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.filter("
        "v => v.impact === 'serious' || v.impact === 'critical').map("
        "v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))));")
    return found


@pytest.mark.browser
@pytest.mark.parametrize("width", [360, 1280])
def test_pages_fit_the_screen_in_light_and_dark_with_no_serious_accessibility_violation(sim, viewer, browser,
                                                                                        screens, width):
    if "AXE_CORE_JS" not in os.environ and not os.path.exists(AXE):  # CI sets it (.ci/run): there it must be
        pytest.skip(f"axe-core is not installed at {AXE} (npm install --prefix .ci-node axe-core@4, as .ci/run "
                    "does, or set AXE_CORE_JS)")
    sim.add_many(["m1", "m2"], reply=f"A table:\n\n{TABLE}")
    sim.add("m3", reply="Something else entirely.")
    sim.add("judge", reply=[arbiter_xml(f"Round one.\n\n{TABLE}", 0.5, dissent="m3 differs."),
                            arbiter_xml(f"The options:\n\n{TABLE}", 0.95)])
    save("team", ["m1", "m2", "m3"])
    run_id = record(["m1", "m2", "m3"], "team", "Which options? " + WIDE_WORDS, confidence_threshold=0.9)
    sim.add_many(["v1", "v2"], reply="<answer>42</answer>")
    sim.add("v3", reply=f"<answer>{WIDE_WORDS}</answer>")
    vote = record(["v1", "v2", "v3"], "voters", "What is 6*7?", method="vote")  # its tally
    browser.set_window_size(1400, 1000)
    for dark in (False, True):
        screens(browser, width, dark)
        for path in ("/", f"/runs/{run_id}", f"/runs/{vote}", "/ask", "/runs/nosuchrun"):
            browser.get(viewer + path)
            assert browser.execute_script("return window.innerWidth") == width
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at {width} px ({dark=}): " + \
                browser.execute_script(WIDEST)
            background = browser.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
            level = sum(map(int, re.findall(r"\d+", background)[:3])) / 3
            assert (level < 60) if dark else (level > 200), f"{path}: {background} ({dark=})"
            assert axe_violations(browser) == [], f"{path} at {width} px ({dark=})"
            if path == f"/runs/{run_id}":
                # the markdown table scrolls inside its box (which a keyboard can focus), its words whole
                cell = browser.find_element("css selector", "section.answer .markdown table td:last-child")
                assert cell.text.split()[0] == "Supercalifragilisticexpialidocious"
                box = browser.execute_script(
                    "const t = document.querySelector('section.answer .markdown .scrolls');"
                    " return [t.scrollWidth, t.clientWidth, getComputedStyle(t).overflowX]")
                assert box[2] == "auto" and (width > 760 or box[0] > box[1])  # on a phone wider than its box
    # the runs list: cards on a phone, every column of the table on a desktop
    browser.get(viewer + "/")
    shape = browser.execute_script("return getComputedStyle(document.querySelector('table.runs tbody tr')).display")
    assert shape == ("table-row" if width >= 760 else "flex")
    assert browser.find_element("css selector", "table.runs td.prompt").is_displayed()


@pytest.mark.browser
def test_a_keyboard_reader_can_skip_to_the_content_and_sees_where_it_is(sim, viewer, browser):
    from selenium.webdriver.common.keys import Keys

    browser.get(viewer + "/ask")
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content" and skip.is_displayed()
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    skip.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "content"


@pytest.mark.browser
def test_continuing_a_run_of_no_saved_consortium_asks_which(sim, viewer, browser):
    """The Continue form chose the first saved consortium for a run that used none (issue 23)."""
    sim.add("m1", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    save("alpha", ["m1"])
    assert invoke("consortium", "Capital of France?", "-m", "m1", "--arbiter", "judge").exit_code == 0
    browser.get(f"{viewer}/runs/{store.list_runs(1)[0].id}")
    choice = browser.find_element("css selector", "section.continue select")
    assert choice.get_attribute("value") == "" and choice.get_attribute("required") == "true"
    browser.find_element("css selector", "section.continue textarea").send_keys("And Germany?")
    browser.find_element("css selector", "section.continue button").click()
    assert "/runs/" in browser.current_url and len(store.list_runs(None)) == 1  # the browser would not send it


def test_the_banner_words_every_status():
    """Each status of the outcome vocabulary in words, as the banner and the page title say it."""
    from llm_consortium.core.outcome import STATUSES
    from llm_consortium.core.record import OutcomeRecord
    from llm_consortium.faces.web.pages import status_words

    said = {status: status_words(OutcomeRecord(status=status, members=3, answered=1)) for status in
            (*STATUSES, "running")}
    assert said == {"failed": "Failed", "cancelled": "Cancelled", "interrupted": "Interrupted",
                    "no_verdict": "No verdict", "degraded": "Fallback decided", "budget": "Budget stop",
                    "partial": "Partial: 2 of 3 failed", "below_threshold": "Below threshold",
                    "success": "Answered", "running": "Running"}
    # An adaptive panel: of 5, 3 asked, 2 answered; the 2 never asked did not fail.
    adaptive = OutcomeRecord(status="partial", members=5, answered=2, not_asked=2, decisive=True)
    assert status_words(adaptive) == "Partial: 1 of 3 asked failed"
