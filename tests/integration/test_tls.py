"""Native TLS: https:// and wss:// with --tls-cert/--tls-key (TLS 1.2+)."""
import asyncio
import json
import socket
import ssl
import subprocess

import pytest
import requests
import websockets

from parley_client import HOST, T, arun, run_parleyd


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-subj", "/CN=localhost", "-days", "2", "-addext",
                    f"subjectAltName=DNS:localhost,IP:{HOST}"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


@pytest.fixture
def tls_server(parley, cert):
    crt, key = cert
    srv = parley("--tls-cert", str(crt), "--tls-key", str(key))
    assert srv.scheme == "https"
    return srv


def client_ctx(crt):
    return ssl.create_default_context(cafile=str(crt))


def register(srv, crt, name):
    r = requests.post(srv.url + "/v1/users", json={"username": name, "password": "password-" + name},
                      verify=str(crt), timeout=T)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_https_health_static_and_rest(tls_server, cert):
    crt, _ = cert
    r = requests.get(tls_server.url + "/healthz", verify=str(crt), timeout=T)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert requests.get(tls_server.url + "/", verify=str(crt), timeout=T).status_code == 200
    tok = register(tls_server, crt, "tlsalice")
    r = requests.get(tls_server.url + "/v1/conversations", verify=str(crt), timeout=T,
                     headers={"Authorization": "Bearer " + tok})
    assert r.status_code == 200 and r.json()["conversations"] == []


def test_keepalive_and_pipelining_over_tls(tls_server, cert):
    crt, _ = cert
    raw = socket.create_connection((HOST, tls_server.port), timeout=T)
    s = client_ctx(crt).wrap_socket(raw, server_hostname=HOST)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    data = b""
    while data.count(b"HTTP/1.1 200") < 3:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()


def test_wss_messaging_between_two_users(tls_server, cert):
    crt, _ = cert
    ta, tb = register(tls_server, crt, "tlsann"), register(tls_server, crt, "tlsbob")
    r = requests.post(tls_server.url + "/v1/conversations", json={"type": "direct", "with": "tlsbob"},
                      headers={"Authorization": "Bearer " + ta}, verify=str(crt), timeout=T)
    conv = r.json()["id"]
    ws_url = f"wss://{HOST}:{tls_server.port}/v1/ws?token="

    async def go():
        ctx = client_ctx(crt)
        async with websockets.connect(ws_url + ta, ssl=ctx) as wa, \
                websockets.connect(ws_url + tb, ssl=ctx) as wb:
            for ws in (wa, wb):
                assert json.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
            big = "z" * 15000
            for i in range(20):
                await wa.send(json.dumps({"type": "send", "conv": conv, "cmid": f"t{i}",
                                          "body": f"{i}:{big}"}))
            got, acks = [], 0
            while len(got) < 20:
                m = json.loads(await asyncio.wait_for(wb.recv(), T))
                if m["type"] == "msg":
                    got.append(m["seq"])
            while acks < 20:
                m = json.loads(await asyncio.wait_for(wa.recv(), T))
                acks += m["type"] == "ack"
            assert got == list(range(1, 21))
        assert wa.close_code == 1000
    arun(go())


def test_wss_pipelined_syncs_are_paced_not_closed(tls_server, cert):
    """20 syncs written at once, each answered by a page of about 256 KiB:
    over TLS too the server stops reading while its queue is over half full
    and resumes (frames already decrypted included) once it drains."""
    crt, _ = cert
    ta, tb = register(tls_server, crt, "tlspia"), register(tls_server, crt, "tlspib")
    r = requests.post(tls_server.url + "/v1/conversations", json={"type": "direct", "with": "tlspib"},
                      headers={"Authorization": "Bearer " + ta}, verify=str(crt), timeout=T)
    conv = r.json()["id"]
    ws_url = f"wss://{HOST}:{tls_server.port}/v1/ws?token="
    n = 20

    async def go():
        ctx = client_ctx(crt)
        async with websockets.connect(ws_url + ta, ssl=ctx, max_size=2 ** 24) as wa, \
                websockets.connect(ws_url + tb, ssl=ctx, max_size=2 ** 24) as wb:
            for ws in (wa, wb):
                assert json.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
            for i in range(64):
                await wa.send(json.dumps({"type": "send", "conv": conv, "cmid": f"p{i}",
                                          "body": "y" * 16000}))
            acks = 0
            while acks < 64:
                m = json.loads(await asyncio.wait_for(wa.recv(), T))
                acks += m["type"] == "ack"
            for i in range(n):  # written back to back, before reading any answer
                await wb.send(json.dumps(
                    {"type": "sync", "conv": conv, "after": 0, "limit": 500, "id": f"s{i}"}))
            got = []
            while len(got) < n:
                m = json.loads(await asyncio.wait_for(wb.recv(), T))
                if m["type"] == "history":
                    assert m["messages"][0]["seq"] == 1 and m["more"] is True
                    got.append(m["id"])
            assert got == [f"s{i}" for i in range(n)]
        assert wb.close_code == 1000
    arun(go())


def test_old_tls_and_plaintext_refused_server_keeps_serving(tls_server, cert):
    crt, _ = cert
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(crt))
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection((HOST, tls_server.port), timeout=T) as raw:
            old.wrap_socket(raw, server_hostname=HOST).recv(1)
    # Plain HTTP to the TLS port: the handshake fails and the socket closes.
    with socket.create_connection((HOST, tls_server.port), timeout=T) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = raw.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        assert b"200 OK" not in data
    r = requests.get(tls_server.url + "/healthz", verify=str(crt), timeout=T)
    assert r.status_code == 200


@pytest.mark.parametrize("which", ["missing-cert", "key-mismatch", "only-cert"])
def test_bad_tls_config_exits_with_error(tmp_path, cert, which):
    crt, key = cert
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-out", str(other)],
                   check=True, capture_output=True, timeout=30)
    flags = {"missing-cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
             "key-mismatch": ["--tls-cert", str(crt), "--tls-key", str(other)],
             "only-cert": ["--tls-cert", str(crt)]}[which]
    p = run_parleyd(tmp_path, *flags)
    assert p.returncode != 0
    assert b"TLS" in p.stderr or b"tls" in p.stderr
