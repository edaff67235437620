"""ONNX Runtime hygiene inside PostgreSQL backends:

1. telemetry stays off: after inference the backend has no extra thread, and nothing appears
   under the postgres user's ~/.cache/Microsoft (where ONNX Runtime 1.32 writes telemetry);
2. a cancel and a statement_timeout take effect quickly even inside one long ONNX Runtime call
   (the watchdog terminates the call), and a cancel while a long text array is tokenized, with
   SQLSTATE 57014; the latencies are printed;
3. 20 pg_terminate_backend calls during long runs (texts, images, slides) never crash a backend:
   the postmaster never restarts (an idle session survives, the start time is unchanged, the
   log has no "terminated by signal");
4. a cancel during a model load returns at once, and the next call loads the model; sessions
   that time out at every moment of their first load and disconnect at once (the library and
   the model still loading on a helper thread) never crash the server;
5. statement_timeout during image decoding and slide tiling (not only inference).

Usage: runtime_hygiene.py PORT [SERVER_LOG]
"""
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time

PORT = sys.argv[1]
BASE = ["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", PORT, "-U", "postgres", "-d", "biomedclip_regress"]
# 512 texts of 256 tokens in one call: ONNX Runtime runs of 256 texts (the largest batch_size), each
# about a second or more on the tiny model (256 texts alone took 0.9 s in one CI run with the
# inference service). Tokenizing them takes 0.5-1 s before the first run.
LONG_CALL = ("SET biomedclip.batch_size = 256; "
             "SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 300), ARRAY[512])));")


SHARED = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
LOG = sys.argv[2] if len(sys.argv) > 2 else None


def connect(**kw):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="biomedclip_regress", autocommit=True, **kw)


def psql(sql, app="biomedclip_hygiene", check=True):
    env = dict(os.environ, PGAPPNAME=app)
    out = subprocess.run(BASE + ["-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise SystemExit(f"psql failed: {out.stderr}")
    return out


results = []


def check(name, ok, detail):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")


def telemetry():
    home = pwd.getpwnam("postgres").pw_dir
    cache = os.path.join(home, ".cache", "Microsoft")
    shutil.rmtree(cache, ignore_errors=True)
    out = psql("SELECT embedding_dims(biomedclip_embed_text('pleural effusion'));"
               "SELECT pg_sleep(1.5);"
               "SELECT count(*) FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/task');").stdout.split()
    threads = int(out[-1])
    check("no ONNX Runtime telemetry thread", threads == 1, f"{threads} thread(s) in the backend after inference")
    written = os.path.exists(cache)
    check("no telemetry files", not written, f"{cache} {'exists' if written else 'absent'}")


def worker_threads_block_signals():
    # With 3 intra-op threads ONNX Runtime starts 2 workers per session; they must have every
    # signal blocked, so that PostgreSQL's handlers (cancel, timeouts, die) only ever run on the
    # backend's own thread. The session stays open while /proc is read.
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="biomedclip_regress", autocommit=True) as c:
        # The threads of a backend's own model (with the inference service on, this session
        # asks for backend mode: the service's threads are not in a postmaster child).
        c.execute("SET biomedclip.inference = backend")
        c.execute("SET biomedclip.intra_op_threads = 3")
        c.execute("SELECT biomedclip_load_model()")
        c.execute("SELECT embedding_dims(biomedclip_embed_text('x'))")
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        workers = [t for t in os.listdir(f"/proc/{pid}/task") if t != str(pid)]
        masks = []
        for t in workers:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                masks += [int(l.split()[1], 16) for l in f if l.startswith("SigBlk:")]
    # Signals 1..31 except SIGKILL (9) and SIGSTOP (19), which cannot be blocked.
    wanted = sum(1 << (n - 1) for n in range(1, 32) if n not in (9, 19))
    ok = len(workers) >= 2 and len(masks) == len(workers) and all(m & wanted == wanted for m in masks)
    check("ONNX Runtime worker threads block all signals", ok,
          f"{len(workers)} worker thread(s), SigBlk {[hex(m) for m in masks]}")


# Tokenizes for seconds before any inference: a cancel must also be seen between texts (round 2
# CI: a cancel 0.8 s into LONG_CALL, during its tokenization, took effect 348-414 ms later).
TOKENIZING_CALL = "SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 300), ARRAY[4096])));"


def cancel_in(phase, timeout_ms=None):
    """Runs a long call on a session whose model is loaded, and cancels it (or lets
    statement_timeout end it) in `phase`: 'inference' once the session waits on the model
    (wait_event_type 'Extension', shown only during inference) and 0.3 s more, 'tokenizing' 0.6 s
    into TOKENIZING_CALL. Returns (ms from the cancel to the statement's end, or the statement's
    whole time under a timeout; the session's wait event type at the cancel; SQLSTATE)."""
    import psycopg

    call = LONG_CALL.split("; ", 1)[1] if phase == "inference" else TOKENIZING_CALL
    done = {}
    with connect() as c, connect() as watcher:
        c.execute("SET biomedclip.batch_size = 256")
        c.execute("SELECT embedding_dims(biomedclip_embed_text('x'))")
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        if timeout_ms:
            c.execute(f"SET statement_timeout = {int(timeout_ms)}")

        def run():
            done["start"] = time.monotonic()
            try:
                c.execute(call)
                done["sqlstate"] = None
            except psycopg.Error as e:
                done["sqlstate"] = e.diag.sqlstate
            done["end"] = time.monotonic()

        wait_type = lambda: watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]
        t = threading.Thread(target=run)
        t.start()
        if timeout_ms:
            t.join()
            return (done["end"] - done["start"]) * 1000, None, done["sqlstate"]
        if phase == "inference":
            deadline = time.monotonic() + 30
            while wait_type() != "Extension" and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.3)
        else:
            time.sleep(0.6)
        at_cancel = wait_type()
        before = time.monotonic()
        watcher.execute("SELECT pg_cancel_backend(%s)", (pid,))
        t.join()
    return (done["end"] - before) * 1000, at_cancel, done["sqlstate"]


def cancel_latency():
    ms, at_cancel, code = cancel_in("inference")
    check("cancel inside one long ONNX Runtime call", at_cancel == "Extension" and code == "57014" and ms < 250,
          f"took effect {ms:.0f} ms after pg_cancel_backend (target 50 ms); SQLSTATE {code}; session waiting on the model when cancelled: {at_cancel == 'Extension'}")
    ms, at_cancel, code = cancel_in("tokenizing")
    check("cancel while a long text array is tokenized", at_cancel is None and code == "57014" and ms < 250,
          f"took effect {ms:.0f} ms after pg_cancel_backend (target 50 ms); SQLSTATE {code}; wait event at the cancel: {at_cancel}")


def timeout_latency():
    # Timed from the statement on an open connection whose model is loaded: tokenizing LONG_CALL
    # takes 0.5-1 s, so a 1.5 s timeout fires inside the first ONNX Runtime run (about 3 s).
    ms, _, code = cancel_in("inference", timeout_ms=1500)
    check("statement_timeout inside one long call", code == "57014" and ms < 1500 + 250,
          f"ended after {ms:.0f} ms for a 1500 ms timeout (one client round trip included); SQLSTATE {code}")


def text_cache_holds_no_text():
    """The backend's text cache (biomedclip_embed_text, zero-shot prompts) is keyed by the text's
    SHA-256: embedding many distinct long texts does not keep them in the backend, and the same
    texts again are answered from the cache."""
    with connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]

        def rss_mib():
            with open(f"/proc/{pid}/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

        c.execute("SELECT biomedclip_embed_text('warm up')")
        texts = "SELECT count(biomedclip_embed_text(g || ' report ' || repeat('pleural effusion ', 6000))) FROM generate_series(1, 600) g"
        before = rss_mib()
        c.execute(texts)
        grown = rss_mib() - before
        misses = c.execute("SELECT biomedclip_prompt_cache_misses()").fetchone()[0]
        c.execute(texts)
        again = c.execute("SELECT biomedclip_prompt_cache_misses()").fetchone()[0] - misses
    # 600 x 100 KB texts as keys would be 60 MB; their hashes and vectors are 1.3 MB.
    check("the text cache keeps no text: 600 distinct 100 KB texts", grown < 20 and again == 0,
          f"backend RSS grew {grown:.1f} MiB (the texts: 60 MB); the same texts again through the model: {again}")


def long_call_really_is_long():
    start = time.monotonic()
    psql(LONG_CALL)
    elapsed = time.monotonic() - start
    check("the uncancelled call is long enough to test cancellation", elapsed > 1.2, f"{elapsed:.1f} s")


def no_network():
    """strace a fresh backend while it loads the model, embeds, searches through ivf and scores
    zero-shot: no socket is created, connected or bound, and nothing is sent to an address."""
    import psycopg

    out_path = f"/tmp/biomedclip_strace_{os.getpid()}.txt"
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="biomedclip_regress", autocommit=True) as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        # With the inference service, it is traced too: it may accept and answer backends on its
        # Unix socket, nothing else.
        with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="biomedclip_regress", autocommit=True) as o:
            info = o.execute("SELECT biomedclip_model_info()").fetchone()[0]
        traced = [str(pid)] + ([str(info["service_pid"])] if info.get("inference") == "service" else [])
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=network", "-o", out_path] + [a for p in traced for a in ("-p", p)])
        time.sleep(1.0)  # let strace attach
        c.execute("DROP TABLE IF EXISTS net_t; CREATE TABLE net_t (id int, emb embedding(512))")
        c.execute("INSERT INTO net_t SELECT i, biomedclip_embed_text('finding ' || i) FROM generate_series(1, 20) i")
        c.execute("CREATE INDEX ON net_t USING ivf (emb embedding_cosine_ops) WITH (lists = 2)")
        c.execute("SET enable_seqscan = off")
        c.execute("SELECT id FROM net_t ORDER BY emb <=> biomedclip_embed_text('finding 3') LIMIT 3").fetchall()
        c.execute("SELECT * FROM biomedclip_zero_shot((SELECT emb FROM net_t LIMIT 1), ARRAY['a', 'b'])").fetchall()
        c.execute("DROP TABLE net_t")
        time.sleep(0.3)
        tracer.terminate()
        tracer.wait()
    lines = open(out_path).read().splitlines()
    os.unlink(out_path)
    # The one connection allowed: a backend's to the inference service, over AF_UNIX, at the
    # socket under the data directory; and the service accepting on its listening socket (an
    # AF_UNIX socket made before the trace began: the service suite checks it has no other kind).
    service_link = lambda l: ((" socket(AF_UNIX, SOCK_STREAM" in l)
                              or (" connect(" in l and 'sa_family=AF_UNIX, sun_path="biomedclip_inference/service.sock"' in l)
                              or ((" accept4(" in l or " accept(" in l) and len(traced) > 1 and l.split()[0] == traced[1])
                              or " getsockopt(" in l and "SO_PEERCRED" in l)
    linked = [l for l in lines if service_link(l)]
    lines = [l for l in lines if not service_link(l)]
    bad = [l for l in lines if any(f" {call}(" in f" {l.split(' ', 1)[-1]}" for call in ("socket", "connect", "bind", "listen", "accept", "accept4"))
           or ("sendto(" in l and ", NULL, 0" not in l)
           or ("sendmsg(" in l and "msg_name=" in l)]
    client_io = sum(1 for l in lines if "sendto(" in l or "recvfrom(" in l)
    check("no network from the extension (strace of a backend)", not bad and client_io > 0,
          f"{len(lines) + len(linked)} network syscalls traced in {len(traced)} process(es), on the client connection ({client_io}) "
          f"or the AF_UNIX link to the inference service ({len(linked)}); offending: {bad[:3]}")


def long_calls():
    """Three kinds of long statement: a text batch, an image batch, slide patches."""
    images = os.path.join(SHARED, "medpix", "images")
    png = open(os.path.join(images, sorted(f for f in os.listdir(images) if f.endswith(".png"))[0]), "rb").read()
    svs = open(os.path.join(SHARED, "wsi", "CMU-1-Small-Region.svs"), "rb").read()
    return [
        ("texts", LONG_CALL, None),
        ("images", "SET biomedclip.batch_size = 32; SELECT count(*) FROM unnest(biomedclip_embed_images(array_fill(%s::bytea, ARRAY[400])))", png),
        # Every patch of the real SVS, 30 times over (LATERAL: the call is re-run per outer row).
        ("slide", "SET biomedclip.batch_size = 32; SELECT count(*) FROM generate_series(1, 30) g, "
                  "LATERAL biomedclip_slide_patches(%s, max_patches => 100000, tissue_threshold => (0 * g)::float8)", svs),
    ]


def run_statement(sql, arg, app, out):
    import psycopg

    start = time.monotonic()
    try:
        with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="biomedclip_regress", autocommit=True,
                             application_name=app) as c:
            for part in sql.split("; "):
                c.execute(part, (arg,) if "%s" in part else None)
        out["error"] = None
    except psycopg.Error as e:
        out["error"] = e
    out["elapsed"] = time.monotonic() - start


def terminations():
    import random

    rng = random.Random(11)
    calls = long_calls()
    with connect() as idle:
        idle_pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]
        started = idle.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        log_size = os.path.getsize(LOG) if LOG else 0
        killed, kinds = 0, {}
        for i in range(20):
            name, sql, arg = calls[i % len(calls)]
            out = {}
            t = threading.Thread(target=run_statement, args=(sql, arg, "biomedclip_term", out))
            t.start()
            time.sleep(0.4 + rng.random() * 0.6)
            n = idle.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name = 'biomedclip_term' AND state = 'active'").fetchone()[0]
            t.join()
            killed += n
            kinds[name] = kinds.get(name, 0) + n
            time.sleep(0.1)
        same_pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0] == idle_pid
        same_start = idle.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started
    crashes = []
    if LOG:
        with open(LOG, errors="replace") as f:
            f.seek(log_size)
            crashes = [l.strip() for l in f if "terminated by signal" in l or "was terminated" in l or "server process" in l and "exited" in l]
    check("20 terminations during inference never crash a backend", killed >= 18 and same_pid and same_start and not crashes,
          f"{killed} terminated mid-statement ({kinds}); idle session survived: {same_pid}; postmaster start unchanged: {same_start}; "
          f"crash lines in the log: {crashes[:2]}")


def cancel_during_load():
    """A fresh backend loads the model inside its first call; a 1 ms statement_timeout must end
    the load (not wait for it) with 57014, and the next call must load and work. The backend
    loads its own model here even when the inference service runs (that is what is tested)."""
    import psycopg

    own = {"options": "-c biomedclip.inference=backend"}
    with connect(**own) as c:  # how long a load takes here, in a fresh backend
        t0 = time.monotonic()
        c.execute("SELECT biomedclip_load_model() IS NOT NULL")
        plain_load_ms = (time.monotonic() - t0) * 1000
    with connect(**own) as c:
        # One simple-protocol string, an implicit transaction: the error rolls the SET back, so
        # no later statement runs under the 1 ms timeout. (A RESET that ran under it failed once
        # in CI with "canceling statement due to user request": PostgreSQL clears a statement
        # timeout's indicator when the statement ends, so a timeout that fires in a statement
        # that never checks for interrupts is reported at the next check as a plain cancel.)
        start = time.monotonic()
        try:
            c.execute("SET statement_timeout = '1ms'; SELECT biomedclip_embed_text('x')")
            err = None
        except psycopg.Error as e:
            err = e
        elapsed = (time.monotonic() - start) * 1000
        assert c.execute("SHOW statement_timeout").fetchone()[0] == "0"
        t0 = time.monotonic()
        dims = c.execute("SELECT embedding_dims(biomedclip_embed_text('x'))").fetchone()[0]
        load_ms = (time.monotonic() - t0) * 1000
    ok = err is not None and err.diag.sqlstate == "57014" and elapsed < min(100, plain_load_ms / 2) and dims == 512
    check("statement_timeout during a model load ends it at once (57014), not after the load, and the next call loads", ok,
          f"error {getattr(err, 'diag', None) and err.diag.sqlstate} after {elapsed:.0f} ms; a load alone takes {plain_load_ms:.0f} ms, "
          f"load + call {load_ms:.0f} ms")


def exits_during_first_load():
    """Fresh sessions whose first call times out at every moment of the first load (the ONNX
    Runtime library hashed and opened, then the model verified and its sessions built, both on
    a helper thread) and that disconnect at once: the process must wait for that thread before
    exiting. Before the fix, a timeout while the library was still loading crashed the server
    (SIGSEGV at exit, every session restarted)."""
    import psycopg

    own = {"options": "-c biomedclip.inference=backend"}
    with connect(**own) as c:
        started = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        t0 = time.monotonic()
        c.execute("SELECT biomedclip_load_model() IS NOT NULL")
        load_ms = (time.monotonic() - t0) * 1000
    log_size = os.path.getsize(LOG) if LOG else 0
    # 60 moments from 1 ms to 1.5 times a whole load.
    moments = sorted({max(1, round(load_ms * 1.5 * i / 60)) for i in range(60)})
    outcomes, crashed_at = {}, None
    for ms in moments:
        try:
            with connect(**own) as c:
                c.execute(f"SET statement_timeout = {ms}")
                try:
                    c.execute("SELECT biomedclip_embed_text('x')")
                    outcome = "done"
                except psycopg.Error as e:
                    outcome = e.diag.sqlstate
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            time.sleep(0.05)  # the backend exits
            with connect() as c:
                same = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started
        except psycopg.Error:
            same = False
        if not same:
            crashed_at = ms
            break
    crashes = []
    if LOG:
        with open(LOG, errors="replace") as f:
            f.seek(log_size)
            crashes = [l.strip() for l in f if "terminated by signal" in l]
    if crashed_at is not None:  # wait for the restart so that later checks can run
        for _ in range(100):
            try:
                connect().close()
                break
            except Exception:
                time.sleep(0.2)
    check("sessions that time out during their first load and disconnect at once never crash the server",
          crashed_at is None and not crashes and outcomes.get("57014", 0) > 0,
          f"{len(moments)} timeouts from {moments[0]} to {moments[-1]} ms (a load: {load_ms:.0f} ms); outcomes {outcomes}; "
          f"server restarted after the {crashed_at} ms timeout: {crashed_at is not None}; crash lines: {crashes[:1]}")


def timeouts_in_decoding():
    """statement_timeout while decoding images and cutting slide tiles, not only during inference."""
    import psycopg

    results = {}
    # A JPEG 2000 CT (about 25 ms to decode each) rendered 200 times: decoding, no model.
    j2k = open(os.path.join(SHARED, "dicom", "CT1_J2KR.dcm"), "rb").read()
    dicom = ("dicom", "SET biomedclip.batch_size = 1; SELECT count(length(biomedclip_render_dicom(%s, 'lung'))) "
                      "FROM generate_series(1, 200)", j2k)
    for name, sql, arg in long_calls()[1:] + [dicom]:
        out = {}
        run_statement("SET statement_timeout = '300ms'; " + sql.split("; ", 1)[1], arg, "biomedclip_timeout", out)
        e = out["error"]
        results[name] = (e.diag.sqlstate if isinstance(e, psycopg.Error) else None, round(out["elapsed"] * 1000))
    ok = all(code == "57014" and ms < 300 + 300 for code, ms in results.values())
    check("statement_timeout during image decoding, DICOM rendering and slide tiling (57014)", ok, f"(SQLSTATE, ms incl. connect) {results}")


telemetry()
no_network()
worker_threads_block_signals()
long_call_really_is_long()
cancel_latency()
timeout_latency()
text_cache_holds_no_text()
cancel_during_load()
exits_during_first_load()
timeouts_in_decoding()
terminations()
failed = results.count(False)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
