"""The backup README.md documents: `mdb_copy -c DATA_DIR DIR` while parleyd
runs and keeps writing gives a store that a new parleyd opens, holding every
message acknowledged before the copy started, in a gapless prefix of each
conversation. Skipped without mdb_copy (Debian package lmdb-utils)."""

import shutil
import subprocess
import threading
import time

import pytest

from parley_client import User, direct, history, register, send_rest


def test_mdb_copy_of_a_running_server_is_a_consistent_backup(parley, tmp_path):
    if not shutil.which("mdb_copy"):
        pytest.skip("mdb_copy is not installed (lmdb-utils)")
    srv = parley()
    a, b = register(srv), register(srv)
    conv = direct(a, b)
    before = 200
    for i in range(before):
        r = send_rest(a, conv, f"m{i}", f"message {i}")
        assert r.status_code in (200, 201), r.text
        assert r.json()["seq"] == i + 1
    # An ack means "in the message log"; the store holds it within
    # --apply-delay. A read of the conversation waits for that
    # (read-your-writes), so the copy below must hold all of them.
    assert len(history(a, conv)) == before

    # Keep writing while the copy runs.
    stop = threading.Event()
    acked, errors = [], []

    def writer():
        i = before
        while not stop.is_set() and i < before + 20000:
            r = send_rest(a, conv, f"m{i}", f"message {i}")
            if r.status_code not in (200, 201):
                errors.append(r.text)
                return
            acked.append(r.json()["seq"])
            i += 1

    def wait_acks(n):
        for _ in range(3000):
            if len(acked) >= n or errors or not t.is_alive():
                return
            time.sleep(0.01)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_acks(1)  # the writer runs before, during and after the copy
        backup = tmp_path / "backup"
        backup.mkdir(mode=0o700)
        r = subprocess.run(["mdb_copy", "-c", str(srv.data_dir), str(backup)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        wait_acks(len(acked) + 1)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors, errors
    assert len(acked) >= 2, "the writer did not keep writing around the copy"
    assert (backup / "data.mdb").is_file()

    # The live server lost nothing and kept its order.
    live = history(a, conv)
    assert [m["seq"] for m in live] == list(range(1, before + len(acked) + 1))

    # A new parleyd on the copy serves a consistent prefix of it.
    copy = parley("--data-dir", str(backup))
    a2 = User(copy, a.name, a.token, a.device, a.expires)  # tokens are in the store too
    msgs = history(a2, conv)
    n = len(msgs)
    assert before <= n <= before + len(acked)
    assert [m["seq"] for m in msgs] == list(range(1, n + 1))
    assert [m["body"] for m in msgs] == [f"message {i}" for i in range(n)]
    assert msgs == live[:n]
