"""BFF_FRONTEND as a directory (a built SPA), BFF_LOGIN_REQUIRED, and the answer every error gets: an HTML page for a
page navigation, JSON for a call (DESIGN §11). In-process (httpx.ASGITransport), the provider and upstream doubles on
real sockets, a real Redis."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from bff.errors import BFFError
from bff.frontend import IMMUTABLE, hashed
from bff.pages import error_page, is_navigation, prefers_html
from bff.settings import Settings, SettingsError
from tests.bff.conftest import Rig, running
from tests.bff.doubles import Provider

pytestmark = pytest.mark.anyio

# What a browser sends (Chromium 12x): a page load, a fetch(), a <script type=module>, an <img>.
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Accept": "text/html,application/xhtml+xml,"
            "application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"}  # fmt: skip
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Accept": "*/*"}
SCRIPT = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "script", "Accept": "*/*"}
IMAGE = {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image", "Accept": "image/avif,image/webp,*/*;q=0.8"}
CURL_HTML = {"Accept": "text/html"}  # no Fetch Metadata: Accept decides
INDEX = '<!doctype html><title>Orders</title><div id="app"></div><script type="module" src="/assets/index-BdX3k9aZ.js">'


def build_spa(root: Path) -> Path:
    """A built SPA as Vite and webpack leave it (hashed names), plus everything that must never be served."""
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-BdX3k9aZ.js").write_text("console.log('spa')")
    (dist / "assets" / "app.3f9a1c2e.css").write_text("body{}")
    (dist / "assets" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (dist / "robots.txt").write_text("User-agent: *")
    (dist / "assets" / "video-Ab12Cd34.webm").write_bytes(bytes(range(256)) * 1200)  # large: streamed from disk
    (dist / "manifest.webmanifest").write_text("{}")
    (dist / "docs").mkdir()
    (dist / "docs" / "guide.txt").write_text("a guide")
    (dist / ".env").write_text("SECRET=dotfile")
    (dist / ".git").mkdir()
    (dist / ".git" / "config").write_text("[core] secret-git")
    (dist / "assets" / ".hidden.js").write_text("secret-hidden")
    (root / "outside.txt").write_text("secret-outside")
    os.symlink(root / "outside.txt", dist / "leak.txt")  # a symlink out of the directory
    os.symlink(root, dist / "up")  # a directory symlink out
    os.symlink(dist / ".env", dist / "env.txt")  # a symlink to a dotfile inside
    os.symlink(dist / "robots.txt", dist / "robots-link.txt")  # a symlink inside: fine
    return dist


@pytest.fixture
def spa(tmp_path: Path) -> Path:
    return build_spa(tmp_path)


@pytest.fixture
async def site(rig_env: tuple[Provider, str, dict[str, str]], spa: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    provider, upstream_url, env = rig_env
    marker = request.node.get_closest_marker("bff_env")
    extra = marker.kwargs if marker is not None else {}
    async with running(provider, upstream_url, {**env, "BFF_FRONTEND": str(spa), **extra}) as rig:
        yield rig


async def raw_get(rig: Rig, raw_path: bytes, headers: dict[str, str], cookie: str | None = None) -> httpx.Response:
    """A GET with the path bytes exactly as given, straight into the app as uvicorn passes them (``path`` decoded
    once, ``raw_path`` as sent): httpx would resolve dot segments in any URL it is given."""
    sent = {**headers, "Host": "bff.test", **({"Cookie": cookie} if cookie else {})}
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": "GET",
        "scheme": "https",
        "path": unquote(raw_path.decode("latin-1"), encoding="latin-1"), "raw_path": raw_path, "query_string": b"",
        "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in sent.items()],
        "client": ("127.0.0.1", 1234), "server": ("bff.test", 443), "state": {},
    }  # fmt: skip
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await rig.app(scope, receive, send)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return httpx.Response(start["status"], headers=start["headers"], content=body)


async def test_files_with_their_type_and_caching(site: Rig) -> None:
    browser = site.browser()
    index = await browser.request("GET", "/", csrf=False, headers=NAVIGATE)
    assert index.status_code == 200 and index.text == INDEX
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["cache-control"] == "no-cache"  # a deploy shows at the next load
    script = await browser.request("GET", "/assets/index-BdX3k9aZ.js", csrf=False, headers=SCRIPT)
    assert script.status_code == 200 and script.text == "console.log('spa')"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"  # module scripts need exactly this
    assert script.headers["cache-control"] == IMMUTABLE
    assert script.headers["x-content-type-options"] == "nosniff"
    css = await browser.request("GET", "/assets/app.3f9a1c2e.css", csrf=False)
    assert css.headers["content-type"].startswith("text/css") and css.headers["cache-control"] == IMMUTABLE
    plain = (("/robots.txt", "text/plain"), ("/assets/logo.svg", "image/svg+xml"),
             ("/manifest.webmanifest", "application/manifest+json"), ("/robots-link.txt", "text/plain"))  # fmt: skip
    for path, kind in plain:
        answer = await browser.request("GET", path, csrf=False, headers=IMAGE)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(kind), path
        assert answer.headers["cache-control"] == "no-cache", path  # no hash in the name: revalidated
    head = await browser.request("HEAD", "/assets/index-BdX3k9aZ.js", csrf=False)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "18"
    again = await browser.request("GET", "/", csrf=False, headers={**NAVIGATE, "If-None-Match": index.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["cache-control"] == "no-cache"
    since = await browser.request("GET", "/", csrf=False, headers={"If-Modified-Since": index.headers["last-modified"]})
    assert since.status_code == 304
    big = await browser.request("GET", "/assets/video-Ab12Cd34.webm", csrf=False)
    assert big.status_code == 200 and big.content == bytes(range(256)) * 1200
    assert big.headers["content-type"] == "video/webm" and big.headers["cache-control"] == IMMUTABLE
    part = await browser.request("GET", "/assets/video-Ab12Cd34.webm", csrf=False, headers={"Range": "bytes=1-3"})
    assert part.status_code == 206 and part.content == b"\x01\x02\x03"
    small = await browser.request("GET", "/robots.txt", csrf=False, headers={"Range": "bytes=0-3"})
    assert small.status_code == 206 and small.content == b"User"


async def test_the_api_path_never_reaches_the_frontend(site: Rig) -> None:
    """The frontend is the router's fallback, behind /api/ (a middleware ahead of the router) and /bff/*: the proxy's
    hot path never runs a line of it (DESIGN §11)."""
    frontend = site.app.router.default
    calls: list[str] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await frontend(scope, receive, send)

    site.app.router.default = spy
    browser = await site.logged_in()
    for path in ("/api/notes/me", "/api/nope/x", "/bff/user", "/healthz"):
        await browser.request("GET", path)
    assert calls == []
    assert (await browser.request("GET", "/orders/1", csrf=False, headers=NAVIGATE)).text == INDEX
    assert calls == ["/orders/1"]


async def test_spa_fallback_only_for_navigations(site: Rig) -> None:
    browser = site.browser()
    for headers in (NAVIGATE, CURL_HTML):  # a client-side route, loaded or reloaded in the address bar
        page = await browser.request("GET", "/orders/42?tab=items", csrf=False, headers=headers)
        assert page.status_code == 200 and page.text == INDEX, headers
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["vary"] == "Sec-Fetch-Mode, Accept"  # a cache in front must not give it to a fetch
    # The same path fetched by a script, and a missing asset: 404, never index.html (a script tag would run HTML)
    for path, headers in (("/orders/42", FETCH), ("/assets/index-Zz9Zz9Zz.js", SCRIPT), ("/assets/gone.png", IMAGE),
                          ("/assets/index-Zz9Zz9Zz.js", {}), ("/orders/42", {"Accept": "application/json"}),
                          ("/orders/42", {**FETCH, "Accept": "text/html"})):  # fmt: skip
        missing = await browser.request("GET", path, csrf=False, headers=headers)
        assert missing.status_code == 404, (path, headers)
        assert missing.json() == {"error": "not_found", "error_description": "No such file."}
        assert INDEX not in missing.text
    # a directory is no file: a navigation gets the SPA, anything else 404; never a listing
    for path in ("/docs", "/docs/", "/assets/"):
        listing = await browser.request("GET", path, csrf=False, headers=NAVIGATE)
        assert listing.text == INDEX and "guide.txt" not in listing.text
        assert (await browser.request("GET", path, csrf=False, headers=FETCH)).status_code == 404
    assert (await browser.request("GET", "/docs/guide.txt", csrf=False)).text == "a guide"
    refused = await browser.request("POST", "/orders/42", csrf=False, content=b"x")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


TRAVERSALS = [
    b"/../outside.txt", b"/%2e%2e/outside.txt", b"/%2E%2E/outside.txt", b"/%252e%252e/outside.txt",
    b"/assets/..%2f..%2foutside.txt", b"/assets/%2e%2e%2f%2e%2e%2foutside.txt", b"/..%5coutside.txt",
    b"/assets/..;/..;/outside.txt", b"/%c0%ae%c0%ae/outside.txt", b"/leak.txt", b"/up/outside.txt",
    b"/up/dist/.env", b"/env.txt", b"/.env", b"/%2eenv", b"/.git/config", b"/.git/", b"/%2egit/config",
    b"/assets/.hidden.js", b"//etc/passwd", b"/assets//index-BdX3k9aZ.js", b"/%00", b"/index.html%00.js",
    b"/assets/index-BdX3k9aZ.js%2f", b"/\\..\\outside.txt", b"/" + b"%2e" * 3 + b"/outside.txt",
]  # fmt: skip


@pytest.mark.parametrize("headers", [NAVIGATE, FETCH], ids=["navigation", "fetch"])
async def test_nothing_outside_the_directory_and_no_dotfiles(site: Rig, headers: dict[str, str]) -> None:
    for raw in TRAVERSALS:
        answer = await raw_get(site, raw, headers)
        assert answer.status_code in (400, 404), (raw, answer.status_code)
        assert "secret" not in answer.text and INDEX not in answer.text, raw  # no file, and no fallback either


async def test_login_required_redirects_navigations_and_answers_calls_401(rig_env, spa: Path) -> None:  # type: ignore[no-untyped-def]
    provider, upstream_url, env = rig_env
    async with running(provider, upstream_url, {**env, "BFF_FRONTEND": str(spa), "BFF_LOGIN_REQUIRED": "1"}) as rig:
        browser = rig.browser()
        went = await browser.request("GET", "/orders/42?tab=items", csrf=False, headers=NAVIGATE)
        assert went.status_code == 302 and went.headers["cache-control"] == "no-store"
        location = urlsplit(went.headers["location"])
        assert location.path == "/bff/login" and not location.netloc
        assert parse_qs(location.query) == {"return_to": ["/orders/42?tab=items"]}
        assert (await browser.request("GET", "/", csrf=False, headers=CURL_HTML)).headers["location"] == (
            "/bff/login?return_to=%2F"
        )
        # Calls are never redirected: a fetch of a page, an asset, /bff/user and the API get 401 JSON
        for path, headers, csrf in (("/orders/42", FETCH, False), ("/assets/index-BdX3k9aZ.js", SCRIPT, False),
                                    ("/bff/user", FETCH, True), ("/api/notes/me", FETCH, True),
                                    ("/api/notes/me", NAVIGATE, True)):  # fmt: skip
            refused = await browser.request("GET", path, csrf=csrf, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert "location" not in refused.headers
            if headers is FETCH:
                assert refused.json()["error"] == "login_required"
        # the login comes back to the page asked for, which is now served
        done = await browser.login(rig.provider_client, return_to=parse_qs(location.query)["return_to"][0])
        assert done.status_code == 302 and done.headers["location"] == "/orders/42?tab=items"
        page = await browser.request("GET", "/orders/42?tab=items", csrf=False, headers=NAVIGATE)
        assert page.status_code == 200 and page.text == INDEX
        assert page.headers["cache-control"] == "private, no-cache"  # no shared cache keeps what needs a login
        asset = await browser.request("GET", "/assets/index-BdX3k9aZ.js", csrf=False, headers=SCRIPT)
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "private, max-age=31536000, immutable"
        # a path that cannot be a return_to is not passed on as one
        odd = await raw_get(rig, b"/a%5cb", NAVIGATE)
        assert odd.status_code == 302 and odd.headers["location"] in ("/bff/login?return_to=%2F",
                                                                      "/bff/login?return_to=%2Fa%255cb")  # fmt: skip


async def test_login_not_required_by_default(site: Rig) -> None:
    assert not site.settings.login_required
    page = await site.browser().request("GET", "/orders/1", csrf=False, headers=NAVIGATE)
    assert page.status_code == 200 and page.text == INDEX


def _page_parts(text: str) -> tuple[str, str]:
    title = re.search(r"<h1>(.*?)</h1>", text)
    rid = re.search(r"request id <code>([^<]*)</code>", text)
    assert title and rid, text
    return title.group(1), rid.group(1)


async def test_errors_are_pages_for_navigations_and_json_for_calls(site: Rig) -> None:
    browser = site.browser()
    cases = [
        ("/bff/callback?state=forged", 400, "invalid_state", False),  # a stale or forged callback, as users meet it
        ("/bff/user", 403, "csrf", False),  # the address bar sends no X-CSRF
        ("/bff/user", 401, "login_required", True),
        ("/bff/nope", 404, "not_found", False),  # /bff/* is the BFF's, never the SPA's fallback
        ("/bff/login", 405, "method_not_allowed", False),  # Starlette's own refusals too (POSTed below)
        ("/api/nope/x", 404, "not_found", True),
        ("/api/notes/me", 401, "login_required", True),  # a link to an API: a page, never a redirect
        ("/.env", 404, "not_found", False),
    ]
    for path, status, error, csrf in cases:
        method = "POST" if status == 405 else "GET"
        page = await browser.request(method, path, csrf=csrf, headers={**NAVIGATE, "X-Request-ID": "req-12345"})
        assert page.status_code == status, (path, page.text)
        assert page.headers["content-type"] == "text/html; charset=utf-8", path
        assert page.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        title, rid = _page_parts(page.text)
        assert rid == "req-12345" and page.headers["x-request-id"] == "req-12345"
        assert f"<code>{error}</code>" in page.text and str(status) in page.text
        assert "Traceback" not in page.text and "secret" not in page.text
        call = await browser.request(method, path, csrf=csrf, headers=FETCH)
        assert call.status_code == status and call.headers["content-type"] == "application/json", path
        assert set(call.json()) == {"error", "error_description"} and call.json()["error"] == error
        assert call.headers["x-request-id"]


async def test_a_provider_error_at_the_callback_is_a_page(site: Rig) -> None:
    browser = site.browser()
    start = await browser.request("GET", "/bff/login", csrf=False, headers=NAVIGATE)
    query = parse_qs(urlsplit(start.headers["location"]).query)
    answer = f"/bff/callback?state={query['state'][0]}&error=access_denied&iss={site.provider.issuer}"
    page = await browser.request("GET", answer, csrf=False, headers=NAVIGATE)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert "access_denied" in page.text and 'href="/bff/login"' in page.text  # what happened, and the way back


async def test_error_page_escapes_everything() -> None:
    class Odd(BFFError):
        status_code = 418
        error = "<b>odd</b>"

    text = error_page(Odd('<script>alert("x")</script> & more'), '"><img src=x onerror=alert(1)>')
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in text


@pytest.mark.parametrize(
    ("headers", "navigation"),
    [
        ({"sec-fetch-mode": "navigate"}, True),
        ({"sec-fetch-mode": "cors", "accept": "text/html"}, False),  # a fetch asking for HTML is still a call
        ({"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, True),
        ({"accept": "*/*"}, False),
        ({"accept": "application/json, text/html;q=0.5"}, False),
        ({"accept": "text/html;q=0"}, False),
        ({"accept": "text/html;q=nonsense,*/*"}, False),
        ({}, False),
    ],
)
def test_navigation_or_call(headers: dict[str, str], navigation: bool) -> None:
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    assert is_navigation(scope) is navigation


def test_prefers_html_ignores_garbage() -> None:
    assert not prefers_html(b",,;;q=;" * 100)
    assert prefers_html(b"text/html;level=1;q=1, */*;q=0.1")


@pytest.mark.parametrize(
    ("name", "is_hashed"),
    [
        ("index-BdX3k9aZ.js", True),  # Vite / Rollup
        ("index-DxaZtFwQ.css", True),  # a Vite hash without a digit
        ("index-D_uW3-DW.js", True),
        ("chunk-5KZ6JT2P.js", True),  # esbuild
        ("app.3f9a1c2e.js", True),  # webpack
        ("main.3f9a1c2e4b5d6e7f.chunk.js", True),
        ("index.html", False),
        ("favicon.ico", False),
        ("robots.txt", False),
        ("my-component.js", False),
        ("vendor-react-dom.js", False),
        ("app-settings.js", False),
        ("app.deadbeef.js", False),  # hex letters only: a word
    ],
)
def test_content_hash_in_names(name: str, is_hashed: bool) -> None:
    assert hashed(name) is is_hashed


def test_frontend_setting(spa: Path, tmp_path: Path) -> None:
    base = {"BFF_CLIENT_SECRET": "x"}
    assert Settings.from_env(base).frontend_kind == "none"  # the default of `bff serve`
    assert Settings.from_env({**base, "BFF_FRONTEND": "demo"}).frontend_kind == "demo"
    url = Settings.from_env({**base, "BFF_FRONTEND": "http://localhost:5173/"})
    assert url.frontend_kind == "url" and url.frontend == "http://localhost:5173"
    directory = Settings.from_env({**base, "BFF_FRONTEND": str(spa) + "/"})
    assert directory.frontend_kind == "directory" and directory.frontend == str(spa.resolve())
    assert not Settings.from_env(base).login_required
    for bad, says in (
        (str(tmp_path / "nope"), "no such directory"),
        (str(tmp_path), "has no index.html"),
        ("ftp://x", "http(s) URL"),
        ("http://x/?q=1", "http(s) URL"),
    ):
        with pytest.raises(SettingsError, match="BFF_FRONTEND") as caught:
            Settings.from_env({**base, "BFF_FRONTEND": bad})
        assert says in str(caught.value)
    with pytest.raises(SettingsError, match="BFF_LOGIN_REQUIRED"):
        Settings.from_env({**base, "BFF_LOGIN_REQUIRED": "maybe"})


@pytest.mark.bff_env(BFF_FRONTEND="demo")
async def test_demo_and_none(rig: Rig, rig_env: tuple[Provider, str, dict[str, str]]) -> None:
    browser = rig.browser()
    assert (await browser.request("GET", "/", csrf=False)).status_code == 200
    assert (await browser.request("GET", "/static/app.js", csrf=False)).status_code == 200
    assert (await browser.request("GET", "/orders/1", csrf=False, headers=NAVIGATE)).status_code == 404
    provider, upstream_url, env = rig_env
    async with running(provider, upstream_url, env) as bare:  # BFF_FRONTEND unset: none
        plain = bare.browser()
        for path in ("/", "/static/app.js", "/index.html", "/orders/1"):
            page = await plain.request("GET", path, csrf=False, headers=NAVIGATE)
            assert page.status_code == 404 and "<h1>Page not found</h1>" in page.text, path
        assert (await plain.request("GET", "/healthz", csrf=False)).status_code == 200
        assert (await plain.request("GET", "/api/notes/me")).status_code == 401


def test_the_guides_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs_src/your_spa/bff.toml, as docs/guides/your-spa.md shows it, started beside its dist/ (the secret file
    is the one thing replaced: the example names a mounted secret)."""
    example = Path(__file__).resolve().parents[2] / "docs_src" / "your_spa"
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-client-secret-for-the-example")
    monkeypatch.chdir(example)
    env = {"BFF_CONFIG": str(example / "bff.toml"), "BFF_CLIENT_SECRET_FILE": str(secret)}
    settings = Settings.from_env(env)
    assert settings.frontend == str(example / "dist") and settings.frontend_kind == "directory"
    assert settings.login_required
    dev = Settings.from_env({**env, "BFF_FRONTEND": "http://localhost:5173"})  # the environment wins
    assert dev.frontend_kind == "url"


def test_dev_server_urls_and_redirects() -> None:
    from bff.frontend import DevServer
    from bff.metrics import Metrics

    cdn = DevServer("https://cdn.example/v42/", origin="https://app.example", timeout=5, metrics=Metrics())
    scope = {"type": "http", "path": "/assets/a b.js", "raw_path": b"/assets/a%20b.js", "query_string": b"v=1"}
    assert str(cdn.target(scope)) == "https://cdn.example/v42/assets/a%20b.js?v=1"  # the prefix kept, as encoded
    for location, becomes in (
        (b"https://cdn.example/v42/next", b"/next"),
        (b"https://cdn.example/v42", b"/"),
        (b"https://cdn.example/v42?x=1", b"/?x=1"),
        (b"https://cdn.example/v420/next", b"https://cdn.example/v420/next"),  # not its URL: left as it is
        (b"https://elsewhere.example/", b"https://elsewhere.example/"),
        (b"/relative", b"/relative"),
    ):
        assert dict(cdn.answer_headers([(b"Location", location)]))[b"location"] == becomes, location
    kept = cdn.answer_headers(
        [(b"Set-Cookie", b"a=1"), (b"Access-Control-Allow-Origin", b"*"),
         (b"Access-Control-Allow-Credentials", b"true"), (b"Clear-Site-Data", b'"cookies"'),
         (b"Cache-Control", b"max-age=60"), (b"Content-Type", b"text/css")]
    )  # fmt: skip
    assert kept == [(b"cache-control", b"max-age=60"), (b"content-type", b"text/css")]
    with pytest.raises(BFFError):
        cdn.target({"type": "http", "path": "/x", "raw_path": b"/%2e%2e/x", "query_string": b""})
    # BFF_LOGIN_REQUIRED: no shared cache may keep what needs a login, whatever the origin says
    gated = DevServer("https://cdn.example", origin="https://app.example", timeout=5, metrics=Metrics(), private=True)
    for given, becomes in (
        ([(b"Cache-Control", b"public, max-age=600, immutable")], b"private, max-age=600, immutable"),
        ([(b"Cache-Control", b"no-cache"), (b"Cache-Control", b"Public")], b"private, no-cache"),
        ([], b"private"),
    ):
        assert [v for n, v in gated.answer_headers(given) if n == b"cache-control"] == [becomes], given
