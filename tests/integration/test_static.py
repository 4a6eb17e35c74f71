"""Static files from --web-dir: content types, ETag/304, HEAD, methods, 404,
and path traversal (raw sockets, so that nothing normalises the path)."""

import pytest
import requests

from parley_client import RawHTTP, http_get

H = b"Host: test\r\n"


@pytest.fixture
def site(parley, webroot):
    srv = parley(web_dir=webroot["root"])
    srv.files = webroot["files"]
    srv.marker = webroot["secret_marker"]
    return srv


def test_root_serves_index_html(site):
    r = requests.get(site.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.content == site.files["index.html"]
    assert r.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("name,ctype", [
    ("index.html", "text/html"),
    ("style.css", "text/css"),
    ("app.js", "text/javascript"),
    ("data.json", "application/json"),
    ("logo.svg", "image/svg+xml"),
    ("pic.png", "image/png"),
    ("notes.txt", "text/plain"),
    ("sub/page.html", "text/html"),
])
def test_file_content_and_type(site, name, ctype):
    r = requests.get(f"{site.url}/{name}", timeout=10)
    assert r.status_code == 200
    assert r.content == site.files[name]
    assert r.headers["Content-Type"].split(";")[0].strip() == ctype
    assert int(r.headers["Content-Length"]) == len(site.files[name])


def test_percent_encoded_name_is_decoded(site):
    resp = http_get(site.port, b"/hello%20world.txt")
    assert resp.status == 200, resp
    assert resp.body == site.files["hello world.txt"]


def test_query_string_is_ignored_for_files(site):
    resp = http_get(site.port, b"/app.js?v=123")
    assert resp.status == 200, resp
    assert resp.body == site.files["app.js"]


def test_etag_and_if_none_match(site):
    r = requests.get(site.url + "/style.css", timeout=10)
    etag = r.headers.get("ETag")
    assert etag, r.headers
    r2 = requests.get(site.url + "/style.css", headers={"If-None-Match": etag}, timeout=10)
    assert r2.status_code == 304
    assert r2.content == b""
    assert r2.headers.get("ETag") == etag
    r3 = requests.get(site.url + "/style.css", headers={"If-None-Match": '"other"'},
                      timeout=10)
    assert r3.status_code == 200
    assert r3.content == site.files["style.css"]


def test_304_keeps_keep_alive_framing(site):
    """304 has no body: the next response on the socket must parse."""
    etag = http_get(site.port, b"/app.js").header("etag")
    with RawHTTP(site.port) as c:
        r = c.request(b"GET /app.js HTTP/1.1\r\n" + H + b"If-None-Match: "
                      + etag.encode() + b"\r\n\r\n")
        assert r.status == 304
        r = c.request(b"GET /notes.txt HTTP/1.1\r\n" + H + b"\r\n")
        assert r.status == 200 and r.body == site.files["notes.txt"], r


def test_etag_changes_when_file_changes(site, webroot):
    e1 = http_get(site.port, b"/data.json").header("etag")
    (webroot["root"] / "data.json").write_bytes(b'{"ok": false, "changed": 1}\n')
    r = http_get(site.port, b"/data.json", headers=b"If-None-Match: " + e1.encode() + b"\r\n")
    assert r.status == 200, r
    assert r.body == b'{"ok": false, "changed": 1}\n'
    assert r.header("etag") != e1


def test_head_returns_headers_without_body(site):
    with RawHTTP(site.port) as c:
        r = c.request(b"HEAD /pic.png HTTP/1.1\r\n" + H + b"\r\n", head_only=True)
        assert r.status == 200
        assert r.header("content-type").startswith("image/png")
        assert int(r.header("content-length")) == len(site.files["pic.png"])
        assert r.header("etag")
        # No body was sent: the next response parses from the first byte.
        r2 = c.request(b"GET /notes.txt HTTP/1.1\r\n" + H + b"\r\n")
        assert r2.status == 200 and r2.body == site.files["notes.txt"], r2


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH"])
def test_other_methods_get_405_with_allow(site, method):
    with RawHTTP(site.port) as c:
        r = c.request(method + b" /index.html HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n")
        assert r.status == 405, r
        allow = {m.strip() for m in r.header("allow", "").split(",")}
        assert {"GET", "HEAD"} <= allow, r
        assert "error" in r.json()
    assert http_get(site.port, b"/index.html").body == site.files["index.html"]


def test_missing_file_404_json(site):
    r = http_get(site.port, b"/nope.html")
    assert r.status == 404
    assert r.header("content-type").startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "not_found"
    assert isinstance(err["message"], str) and err["message"]


def test_directory_is_not_listed(site):
    r = http_get(site.port, b"/sub")
    assert r.status in (301, 308, 404), r
    assert b"page.html" not in r.body


TRAVERSALS = [
    b"/../passwd",
    b"/../outside/secret.txt",
    b"/%2e%2e/outside/secret.txt",
    b"/%2E%2E/outside/secret.txt",
    b"/%2e%2e%2foutside%2fsecret.txt",
    b"/sub/../../outside/secret.txt",
    b"/sub/%2e%2e/%2e%2e/outside/secret.txt",
    b"/a/../../passwd",
    b"/./../passwd",
    b"/.secret",
    b"/%2esecret",
    b"/sub/.hidden.txt",
    b"/index.html%00.png",
    b"/%00",
    b"/..\\outside\\secret.txt",
    b"/..%5coutside%5csecret.txt",
    b"/sub\\..\\..\\passwd",
    b"/escape.txt",
    b"/outdir/secret.txt",
    b"//etc/passwd",
    b"/%2fetc/passwd",
    b"/../../../../../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS, ids=[p.decode("latin-1") for p in TRAVERSALS])
def test_traversal_is_404_and_never_leaks(site, path):
    with RawHTTP(site.port) as c:
        c.send(b"GET " + path + b" HTTP/1.1\r\n" + H + b"\r\n")
        r = c.read_response()
    assert r.status == 404, r
    assert site.marker not in r.body
    assert b"root:" not in r.body
    assert r.json()["error"]["code"] == "not_found"


def test_traversal_does_not_harm_later_requests(site):
    with RawHTTP(site.port) as c:
        for p in TRAVERSALS[:5]:
            r = c.request(b"GET " + p + b" HTTP/1.1\r\n" + H + b"\r\n")
            assert r.status == 404
        r = c.request(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert r.status == 200 and r.body == site.files["index.html"]
