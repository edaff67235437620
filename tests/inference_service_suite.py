"""The shared inference service (shared_preload_libraries = 'biomedclip'), on its own cluster.

usage: inference_service_suite.py WORKDIR PORT [--crash-iterations N] [--kill-iterations N]

Checks, each of which fails on a build without the service (or with the defect named):
- the service runs the model: model_info says so, backends never map ONNX Runtime, and the
  service is not a postmaster child (its parent is the supervisor worker);
- outputs equal backend mode bit for bit, for texts of mixed lengths and images sent by 8
  sessions at once (so that requests of different sessions share batches), and batches did form;
- kill -9 and kill -SEGV of the service during a batch from 8 clients: every waiting client gets
  an ERROR (never a hang), the postmaster does not restart (idle sessions keep their pids), and
  the service serves again within 5 s;
- cancel and statement_timeout while a request is queued or running: PostgreSQL's own error, the
  session goes on with correct results, the service drops the request;
- backends terminated while their requests are queued or running: the service's queue and
  connections return to idle and its memory stays flat;
- a model reload: once a session has seen the new model, it never again gets the old one's output;
- the tokenizer the postmaster parsed at start is used only while it is the model's own: after a
  reload to a model whose tokenizer.json differs, service mode tokenizes as backend mode does;
- the socket directory is 0700 and the service refuses peers of another uid; the service holds
  no socket other than AF_UNIX ones.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import psycopg

from suite import PGBIN, ROOT, SHARED, as_pg, check, finish, start_cluster, stop_cluster

WORK, PORT = sys.argv[1], int(sys.argv[2])
ARGS = sys.argv[3:]
CRASH_ITERATIONS = int(ARGS[ARGS.index("--crash-iterations") + 1]) if "--crash-iterations" in ARGS else 20
KILL_ITERATIONS = int(ARGS[ARGS.index("--kill-iterations") + 1]) if "--kill-iterations" in ARGS else 1000
DATA = os.path.join(WORK, "data")
TEXTS = ["a", "pleural effusion", "chest x-ray showing a large left-sided pleural effusion with mediastinal shift",
         "ct", "mri of the brain with contrast, axial t1 weighted, no acute intracranial abnormality seen today",
         "normal", "fracture of the distal radius", "x" * 40]


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def connect(**kw):
    return psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True, **kw)


def service_pid(c):
    return int(c.execute("SELECT (biomedclip_model_info()->>'service_pid')::int").fetchone()[0])


def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def images():
    d = os.path.join(SHARED, "medpix", "images")
    return [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))[:8]]


def wait_serving(timeout=15.0):
    """Seconds until a new session gets an embedding from the (restarted) service."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with connect() as c:
                c.execute("SELECT biomedclip_embed_text('ready')")
                return time.monotonic() - start
        except psycopg.Error:
            time.sleep(0.05)
    return None


def set_server_model_dir(path):
    """ALTER SYSTEM SET (or, with None, RESET) biomedclip.model_dir and reload: the supervisor
    restarts the service with it."""
    with connect() as c:
        c.execute("ALTER SYSTEM RESET biomedclip.model_dir" if path is None else "ALTER SYSTEM SET biomedclip.model_dir = %s" % lit(path))
        c.execute("SELECT pg_reload_conf()")


def in_backend_mode(query, model_dir):
    """`query`'s value in a session that runs its own copy of the model in `model_dir`."""
    with connect() as c:
        c.execute("SET biomedclip.inference = backend; SET biomedclip.model_dir = %s" % lit(model_dir))
        return c.execute(query).fetchone()[0]


def run_identity():
    with connect() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        info = c.execute("SELECT biomedclip_model_info()").fetchone()[0]
        spid = info["service_pid"]
        supervisor = ppid(spid)
        postmaster = int(open(os.path.join(DATA, "postmaster.pid")).readline())
        kind = [open(f"/proc/{supervisor}/cmdline").read().replace("\0", " ").strip()]
        backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        maps = open(f"/proc/{backend}/maps").read()
    check("the service runs the model, outside the postmaster's children",
          info["inference"] == "service" and ppid(supervisor) == postmaster and spid != supervisor and kind
          and "biomedclip inference supervisor" in kind[0] and "onnxruntime" not in maps,
          f"model_info inference={info['inference']}; service pid {spid} is the child of {kind and kind[0]!r} (pid {supervisor}), "
          f"whose parent is the postmaster; ONNX Runtime mapped in the backend: {'onnxruntime' in maps}")

    imgs = images()
    with connect() as c:
        c.execute("SET biomedclip.inference = backend")
        want_text = {t: c.execute("SELECT biomedclip_embed_text(%s)::text", (t,)).fetchone()[0] for t in TEXTS}
        want_img = [c.execute("SELECT biomedclip_embed_image(%s)::text", (b,)).fetchone()[0] for b in imgs]
        where = c.execute("SELECT biomedclip_model_info()->>'inference'").fetchone()[0]
    with connect() as c:
        before = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
    got, errors = [], []
    barrier = threading.Barrier(8)

    def client(k):
        try:
            with connect() as w:
                barrier.wait()
                for r in range(12):
                    t = TEXTS[(k + r) % len(TEXTS)]
                    got.append(("text", t, w.execute("SELECT biomedclip_embed_text(%s)::text", (t,)).fetchone()[0]))
                    i = (k * 3 + r) % len(imgs)
                    got.append(("image", i, w.execute("SELECT biomedclip_embed_image(%s)::text", (imgs[i],)).fetchone()[0]))
        except psycopg.Error as e:
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with connect() as c:
        after = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
    same = sum(v == (want_text[key] if kind == "text" else want_img[key]) for kind, key, v in got)
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    check("service outputs equal backend mode bit for bit, with requests of 8 sessions batched together",
          where == "backend" and not errors and same == len(got) == 8 * 12 * 2 and batches < requests,
          f"{same} of {len(got)} embeddings identical to backend mode (texts of 1 to 40 tokens, 8 images); "
          f"{requests} requests ran in {batches} batches; errors {errors[:1]}")


def run_crashes():
    """Kills the service while 8 sessions are each waiting on it (pg_stat_activity shows
    wait_event_type 'Extension' for all 8): every one of them must get ERROR 57P03."""
    long_call = "SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 300), ARRAY[64])))"
    idle = connect()
    idle_pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]
    errored = hung = 0
    back = []
    for it in range(CRASH_ITERATIONS):
        sig = signal.SIGKILL if it % 2 == 0 else signal.SIGSEGV
        with connect() as c:
            spid = service_pid(c)
        outcomes = []
        stop = threading.Event()

        def client():
            try:
                with connect(application_name="crash") as w:
                    w.execute("SET biomedclip.batch_size = 64")
                    while not stop.is_set():
                        w.execute(long_call)
                    outcomes.append("stopped")
            except psycopg.Error as e:
                outcomes.append(e.sqlstate or "none")

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        with connect() as c:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                waiting = c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crash' "
                                    "AND wait_event_type = 'Extension'").fetchone()[0]
                if waiting == 8:
                    break
                time.sleep(0.005)
        os.kill(spid, sig)
        for t in threads:
            t.join(timeout=10)
        stop.set()
        hung += sum(t.is_alive() for t in threads)
        for t in threads:
            t.join()
        errored += sum(o == "57P03" for o in outcomes)
        took = wait_serving()
        back.append(took if took is not None else 99.0)
    same_idle = idle.execute("SELECT pg_backend_pid()").fetchone()[0] == idle_pid
    idle.close()
    with open(os.path.join(DATA, "server.log"), errors="replace") as f:
        restarts = sum("terminating any other active server processes" in l or "all server processes terminated" in l for l in f)
    check("kill -9 / kill -SEGV of the service during batches from 8 waiting clients",
          errored == 8 * CRASH_ITERATIONS and hung == 0 and same_idle and restarts == 0 and max(back) <= 5.0,
          f"{CRASH_ITERATIONS} kills (SIGKILL and SIGSEGV alternating): {errored} of {8 * CRASH_ITERATIONS} waiting clients got "
          f"ERROR 57P03, {hung} still waiting 10 s later; idle session kept its pid: {same_idle}; postmaster restarts: {restarts}; "
          f"serving again after at most {max(back):.2f} s (median {sorted(back)[len(back) // 2]:.2f} s)")


TIMEOUTS_MS = [1, 5, 50, 150, 300]


def run_cancel():
    long_call = "SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 300), ARRAY[64])))"
    results = []
    with connect() as busy, connect() as c:
        c.execute("SELECT biomedclip_embed_text('warm')")
        busy.execute("SET biomedclip.batch_size = 64")
        before = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
        # The array form never answers from the backend's text cache: every call asks the service.
        after_cancel = "SELECT (biomedclip_embed_texts(ARRAY['after the cancel']))[1]::text"
        want = c.execute(after_cancel).fetchone()[0]
        stop = threading.Event()

        def keep_busy():
            while not stop.is_set():
                try:
                    busy.execute(long_call)
                except psycopg.Error:
                    return

        t = threading.Thread(target=keep_busy)
        t.start()
        time.sleep(0.2)
        # Short timeouts fire while the backend still tokenizes; the longer ones while its
        # request waits behind the busy session's batches or runs in the service.
        for timeout in TIMEOUTS_MS:
            c.execute(f"SET statement_timeout = {timeout}")
            t0 = time.monotonic()
            try:
                c.execute(long_call.replace("64", "32"))
                results.append(("finished", time.monotonic() - t0))
            except psycopg.Error as e:
                results.append((e.sqlstate, time.monotonic() - t0))
            c.execute("SET statement_timeout = 0")
            # The late answer to the abandoned request is skipped; the next answer is right.
            results.append(("next", c.execute(after_cancel).fetchone()[0] == want))
        stop.set()
        t.join()
        after = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
    timeouts = [r for r in results if r[0] == "57014"]
    nexts = [r for r in results if r[0] == "next"]
    check("statement_timeout while queued or running: 57014, the service drops the request, the session goes on",
          len(timeouts) == len(TIMEOUTS_MS) and all(r[1] for r in nexts) and after["cancelled_requests"] > before["cancelled_requests"],
          f"{len(timeouts)} of {len(TIMEOUTS_MS)} ({TIMEOUTS_MS} ms) timed out with 57014 (slowest return {max(r[1] for r in timeouts) * 1e3 if timeouts else 0:.0f} ms); "
          f"next result correct {sum(r[1] for r in nexts)} of {len(nexts)}; requests cancelled in the service "
          f"{after['cancelled_requests'] - before['cancelled_requests']}")


def run_backend_kills():
    call = "SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 100), ARRAY[16])))"
    with connect() as c:
        spid = service_pid(c)
    rss = []
    killer = connect()
    for i in range(KILL_ITERATIONS):
        w = connect()
        pid = w.info.backend_pid

        def run():
            try:
                w.execute(call)
            except psycopg.Error:
                pass

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.002 * (i % 5))
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        t.join()
        w.close()
        if i in (KILL_ITERATIONS // 10, KILL_ITERATIONS - 1):
            rss.append(rss_kib(spid))
    killer.close()
    time.sleep(0.5)
    with connect() as c:
        status = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
        same_service = status["pid"] == spid
    grew = (rss[-1] - rss[0]) / 1024
    check("backends terminated while queued or running: nothing stays in the service",
          same_service and status["queue_requests"] == 0 and status["connections"] == 1 and grew < 16,
          f"{KILL_ITERATIONS} backends terminated mid-request; afterwards the service (same pid {same_service}) holds "
          f"{status['queue_requests']} queued requests and {status['connections']} connection (this one); "
          f"service RSS {rss[0] / 1024:.0f} -> {rss[-1] / 1024:.0f} MiB between kill {KILL_ITERATIONS // 10} and {KILL_ITERATIONS}")


def run_reload():
    other = os.path.join(WORK, "model_seed8")
    if not os.path.exists(os.path.join(other, "manifest.json")):
        subprocess.run([os.path.join(ROOT, "target/pyenv/bin/python"), os.path.join(ROOT, "tools/make_test_model.py"), other,
                        "--size", "tiny", "--seed", "8", "--shared", SHARED], check=True, capture_output=True)
        subprocess.run(["chmod", "-R", "a+rX", WORK], check=True)
    # The array form bypasses the backend's text cache, so every call is answered by a model.
    probe = "SELECT (biomedclip_embed_texts(ARRAY['pleural effusion']))[1]::text"
    with connect() as c:
        old = c.execute(probe).fetchone()[0]
    new = in_backend_mode(probe, other)
    stop = threading.Event()
    seen = []

    def client():
        with connect() as w:
            switched = False
            while not stop.is_set():
                try:
                    v = w.execute(probe).fetchone()[0]
                except psycopg.Error as e:
                    seen.append(("error", e.sqlstate, switched))
                    continue
                seen.append(("old" if v == old else "new" if v == new else "other", None, switched))
                switched = switched or v == new

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    set_server_model_dir(other)
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join()
    set_server_model_dir(None)
    wait_serving()
    old_after_new = sum(kind == "old" and switched for kind, _, switched in seen)
    others = sum(kind == "other" for kind, _, _ in seen)
    errors = sorted({s for kind, s, _ in seen if kind == "error"})
    check("a model reload never returns the old model's output as the new one's",
          old != new and old_after_new == 0 and others == 0 and any(k == "new" for k, _, _ in seen) and set(errors) <= {"57P03"},
          f"{len(seen)} calls from 4 sessions across the reload: {sum(k == 'old' for k, _, _ in seen)} old, "
          f"{sum(k == 'new' for k, _, _ in seen)} new, {old_after_new} old after the session had seen the new one, "
          f"{others} neither; errors {errors} (57P03: the request met the restart)")


def run_tokenizer_preload():
    # A copy of the test model whose tokenizer does not lowercase: 'Pleural Effusion' then gives
    # other ids than the preloaded (lowercasing) tokenizer of the server's own model directory.
    import hashlib
    import json
    base, other = os.path.join(ROOT, "target", "models", "tiny"), os.path.join(WORK, "model_cased")
    os.makedirs(other, exist_ok=True)
    for f in ["image_encoder.onnx", "text_encoder.onnx"]:
        shutil.copyfile(os.path.join(base, f), os.path.join(other, f))
    tok = json.load(open(os.path.join(base, "tokenizer.json")))
    tok["normalizer"]["lowercase"] = False
    raw = json.dumps(tok).encode()
    open(os.path.join(other, "tokenizer.json"), "wb").write(raw)
    manifest = json.load(open(os.path.join(base, "manifest.json")))
    manifest["files"]["tokenizer.json"] = hashlib.sha256(raw).hexdigest()
    json.dump(manifest, open(os.path.join(other, "manifest.json"), "w"))
    subprocess.run(["chmod", "-R", "a+rX", WORK], check=True)
    probe = "SELECT biomedclip_tokenize('Pleural Effusion')"
    with connect() as c:
        preloaded = c.execute(probe).fetchone()[0]
    cased = in_backend_mode(probe, other)
    set_server_model_dir(other)
    time.sleep(1)
    wait_serving(30)
    with connect() as c:
        served = c.execute(probe).fetchone()[0]
        inference = c.execute("SELECT biomedclip_model_info()->>'inference'").fetchone()[0]
    set_server_model_dir(None)
    time.sleep(1)
    wait_serving(30)
    check("after a reload to a model with another tokenizer, the service's sessions tokenize with that model's tokenizer, "
          "not the one the postmaster preloaded",
          inference == "service" and preloaded != cased and served == cased,
          f"preloaded {preloaded}, the other model's (backend mode) {cased}, service mode after the reload {served}")


def run_isolation():
    sock_dir = os.path.join(DATA, "biomedclip_inference")
    mode = os.stat(sock_dir).st_mode & 0o777
    with connect() as c:
        spid = service_pid(c)
    # Another uid cannot even reach the socket (the directory is 0700), and a peer whose uid is
    # not the service's is dropped at accept: try as `nobody` through a copy of the path.
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); s.sendall(b'\\x05\\x00\\x00\\x00\\x01\\x01\\x00\\x00\\x00');"
             " print('answered' if s.recv(10) else 'closed')\nexcept OSError as e:\n print('refused', e.errno)")
    out = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"python3 -c \"{probe}\" {sock_dir}/service.sock"],
                         capture_output=True, text=True).stdout.strip()
    fds = os.listdir(f"/proc/{spid}/fd")
    kinds = set()
    socket_inodes = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{spid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            socket_inodes.add(m.group(1))
    for proto in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"]:
        for line in open(f"/proc/{spid}/net/{proto}").read().splitlines()[1:]:
            if line.split()[9] in socket_inodes:
                kinds.add(proto)
    check("the socket is private: 0700 directory, other users refused, only AF_UNIX sockets in the service",
          mode == 0o700 and out.startswith("refused") and not kinds,
          f"directory mode {oct(mode)}; as nobody: {out}; the service's {len(socket_inodes)} sockets include inet ones: {sorted(kinds)}")


def main():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    start_cluster(DATA, PORT, "shared_preload_libraries = 'biomedclip'", "max_connections = 60")
    try:
        with connect() as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        took = wait_serving(30)
        check("the service starts with the server", took is not None, f"serving {took:.2f} s after pg_ctl start" if took else "not serving")
        run_identity()
        run_isolation()
        run_cancel()
        run_crashes()
        run_backend_kills()
        run_reload()
        run_tokenizer_preload()
    finally:
        stop_cluster(DATA, "fast")
    with open(os.path.join(DATA, "server.log"), errors="replace") as f:
        log = f.read()
    # The supervisor logs the service's own signal deaths (the kills above); any other process
    # killed by a signal would be a postmaster child.
    bad = [l for l in log.splitlines() if ("terminated by signal" in l and "biomedclip: the inference service" not in l) or "PANIC" in l]
    check("no PANIC, no postmaster child killed by a signal in the server log", not bad, f"{len(bad)} such lines {bad[:2]}")
    finish()


if __name__ == "__main__":
    main()
