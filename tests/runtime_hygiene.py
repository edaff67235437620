"""ONNX Runtime hygiene inside PostgreSQL backends:

1. telemetry stays off: after inference the backend has no extra thread, and nothing appears
   under the postgres user's ~/.cache/Microsoft (where ONNX Runtime 1.32 writes telemetry);
2. a cancel and a statement_timeout take effect quickly even inside one long ONNX Runtime call
   (the watchdog terminates the call); the latencies are printed.

Usage: runtime_hygiene.py PORT
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
# 256 texts of 256 tokens in one call: a single ONNX Runtime run of a few seconds on the tiny model.
LONG_CALL = ("SET biomedclip.batch_size = 256; "
             "SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 300), ARRAY[256])));")


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


def cancel_latency():
    done = {}

    def run():
        start = time.monotonic()
        out = psql(LONG_CALL, app="biomedclip_cancel", check=False)
        done["end"] = time.monotonic()
        done["start"] = start
        done["err"] = out.stderr.strip()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.8)
    before = time.monotonic()
    psql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'biomedclip_cancel' AND state = 'active'")
    after = time.monotonic()
    t.join()
    # The signal left between `before` and `after` (the second psql's own start-up and exit).
    low, high = (done["end"] - after) * 1000, (done["end"] - before) * 1000
    cancelled = "canceling statement due to user request" in done["err"]
    check("cancel inside one long ONNX Runtime call", cancelled and low < 250,
          f"took effect {max(low, 0):.0f}-{high:.0f} ms after pg_cancel_backend (target 50 ms); error: {done['err'][:60]}")


def timeout_latency():
    start = time.monotonic()
    out = psql("SET statement_timeout = '800ms'; " + LONG_CALL, check=False)
    elapsed_ms = (time.monotonic() - start) * 1000
    timed_out = "statement timeout" in out.stderr
    check("statement_timeout inside one long call", timed_out and elapsed_ms < 800 + 250,
          f"ended after {elapsed_ms:.0f} ms for an 800 ms timeout (client round trip included); error: {out.stderr.strip()[:60]}")


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
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=network", "-p", str(pid), "-o", out_path])
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
    bad = [l for l in lines if any(f" {call}(" in f" {l.split(' ', 1)[-1]}" for call in ("socket", "connect", "bind", "listen", "accept"))
           or ("sendto(" in l and not l.rstrip().endswith("NULL, 0) = " + l.rsplit("= ", 1)[-1]) and "NULL, 0)" not in l)
           or ("sendmsg(" in l and "msg_name=" in l)]
    client_io = sum(1 for l in lines if "sendto(" in l or "recvfrom(" in l)
    check("no network from the extension (strace of a backend)", not bad and client_io > 0,
          f"{len(lines)} network syscalls traced, all on the client connection ({client_io}); offending: {bad[:3]}")


telemetry()
no_network()
worker_threads_block_signals()
long_call_really_is_long()
cancel_latency()
timeout_latency()
failed = results.count(False)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
