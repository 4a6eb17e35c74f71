"""Files in the web root that are not regular files (issue 12, bug 5).

A named pipe's open() waits for a writer: opened on an I/O thread it would
block every connection of that thread. Pipes, directories, sockets and
devices (directly or through a symlink) are 404 at once, and static files
are opened and read on the thread pool, so the server keeps serving."""

import os
import socket
import stat
import threading

import pytest

from parley_client import RawHTTP, http_get

INDEX = b"<!doctype html><p>INDEX-PAGE</p>\n"
BIG = bytes(range(256)) * 4096  # 1 MiB, read in more than one pread


@pytest.fixture
def odd_root(tmp_path):
    root = tmp_path / "web"
    root.mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "big.bin").write_bytes(BIG)
    (root / "empty.txt").write_bytes(b"")
    os.mkfifo(root / "pipe.txt")
    os.symlink(root / "pipe.txt", root / "pipe-link.html")
    (root / "dir.html").mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "index.html").mkdir()  # "/sub/" names a directory
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "sock.html"))
    os.symlink("/dev/zero", root / "zero.bin")
    os.symlink("/dev/null", root / "null.txt")
    odd = ["/pipe.txt", "/pipe-link.html", "/dir.html", "/sub/", "/sock.html", "/zero.bin",
           "/null.txt"]
    try:  # a device node inside the root itself (needs CAP_MKNOD)
        os.mknod(root / "dev.bin", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        odd.append("/dev.bin")
    except OSError:
        pass
    yield root, odd
    sock.close()
    unblock(root / "pipe.txt")


def unblock(fifo):
    """Opens the FIFO for writing if a reader waits in open() (a server
    without the fix), so that it can stop."""
    for _ in range(4):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return


@pytest.fixture
def one_thread(parley, odd_root):
    root, odd = odd_root
    srv = parley("--threads", "1", web_dir=root)
    srv.odd = odd
    srv.root = root
    return srv


def test_non_regular_files_are_404_and_the_server_keeps_serving(one_thread):
    srv = one_thread
    for path in srv.odd:
        for method in (b"GET", b"HEAD"):
            resp = http_get(srv.port, path.encode(), method=method)
            assert resp.status == 404, (path, method, resp)
        # The single I/O thread was not blocked by it.
        resp = http_get(srv.port, b"/index.html")
        assert resp.status == 200 and resp.body == INDEX, (path, resp)


def test_fifo_in_a_pipeline_then_files_in_order(one_thread):
    srv = one_thread
    with RawHTTP(srv.port) as c:
        c.send(b"GET /pipe.txt HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /empty.txt HTTP/1.1\r\nHost: x\r\n\r\n"
               b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response(head_only=True)
        r5 = c.read_response()
    assert r1.status == 404 and r1.json()["error"]["code"] == "not_found", r1
    assert r2.status == 200 and r2.body == BIG, r2.status
    assert r3.status == 200 and r3.body == b"" and r3.header("content-length") == "0", r3
    assert r4.status == 200 and r4.header("content-length") == str(len(BIG)), r4
    assert r5.status == 200 and r5.body == INDEX, r5


def test_etag_304_still_works_off_the_loop(one_thread):
    srv = one_thread
    first = http_get(srv.port, b"/index.html")
    etag = first.header("etag")
    assert first.status == 200 and etag, first
    again = http_get(srv.port, b"/index.html", headers=b"If-None-Match: " + etag.encode() + b"\r\n")
    assert again.status == 304 and again.body == b"", again
    assert again.header("content-length") == str(len(INDEX))
    # Not an exact match (a longer value, a NUL-free near miss): the file.
    for bad in (etag[:-1], etag + "x", "x" * 200):
        r = http_get(srv.port, b"/index.html", headers=b"If-None-Match: " + bad.encode() + b"\r\n")
        assert r.status == 200 and r.body == INDEX, (bad, r)


def test_many_clients_with_pipes_among_them(one_thread):
    srv = one_thread
    paths = [b"/pipe.txt", b"/index.html", b"/big.bin", b"/pipe-link.html"] * 8
    results = [None] * len(paths)

    def fetch(i):
        results[i] = http_get(srv.port, paths[i])

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for p, r in zip(paths, results):
        assert r is not None, p
        want = 404 if b"pipe" in p else 200
        assert r.status == want, (p, r)
    assert all(r.body == BIG for p, r in zip(paths, results) if p == b"/big.bin")


def test_client_gone_before_the_load_ends(one_thread):
    srv = one_thread
    for _ in range(20):
        with RawHTTP(srv.port) as c:
            c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = http_get(srv.port, b"/index.html")
    assert resp.status == 200 and resp.body == INDEX
