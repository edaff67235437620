"""Inference service against backend mode, side by side in one run on one cluster (benchmark).

usage: service.py PORT DATADIR RESULTS_MD

The cluster runs with shared_preload_libraries = 'biomedclip' and the full-size random-weight
fp32 model; backend mode is the same server with `SET biomedclip.inference = backend` per session
(superuser), so both modes see the same model, library, machine and moment.
Measured: total PSS of the server's processes, throughput of 8 clients sending single images
or single captions, idle latency of one caption, and the first call in a new connection.
"""
import os
import statistics
import subprocess
import sys
import threading
import time

import psycopg

PORT, DATA, RESULTS = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
IMAGES_DIR = os.path.realpath(os.path.join(ROOT, "..", "shared", "data", "medpix", "images"))
IMAGES = [open(os.path.join(IMAGES_DIR, f), "rb").read() for f in sorted(os.listdir(IMAGES_DIR))[:16]]
BACKEND = {"options": "-c biomedclip.inference=backend"}


def connect(**kw):
    return psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True, **kw)


def server_pids():
    """The postmaster, all its children, and their children (the inference service)."""
    root = int(open(os.path.join(DATA, "postmaster.pid")).readline())
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children = {}
    for line in out:
        if line.strip():
            pid, ppid = map(int, line.split())
            children.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children.get(p, []))
    return pids


def pss_mib():
    total = 0
    for pid in server_pids():
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def service_ready():
    with connect() as c:
        c.execute("SELECT biomedclip_embed_text('warm up')")


def pss_added(n, **kw):
    """Total PSS of the idle server, and what each of `n` connections adds once it has embedded
    an image and a text."""
    time.sleep(1)
    idle = pss_mib()
    conns = [connect(**kw) for _ in range(n)]
    for i, c in enumerate(conns):
        c.execute("SELECT biomedclip_embed_image(%s), biomedclip_embed_text(%s)", (IMAGES[i % len(IMAGES)], f"caption {i}"))
    time.sleep(1)
    loaded = pss_mib()
    for c in conns:
        c.close()
    return idle, (loaded - idle) / n


def memory(n_service=16, n_backend=4):
    idle, service = pss_added(n_service)
    idle_b, backend = pss_added(n_backend, **BACKEND)
    return idle, service, idle_b, backend, n_service, n_backend


def throughput(kind, mode, clients=8, seconds=20.0):
    done = [0] * clients
    errors = []
    ready = threading.Barrier(clients + 1)

    def client(k):
        try:
            with connect(**(BACKEND if mode == "backend" else {})) as c:
                c.execute("SELECT biomedclip_embed_text('load')")  # backend mode: the model loads here
                ready.wait()
                i = 0
                while time.monotonic() < stop_at[0]:
                    if kind == "images":
                        c.execute("SELECT biomedclip_embed_image(%s)", (IMAGES[(k + i) % len(IMAGES)],))
                    else:  # distinct captions: the backend's text cache never answers
                        c.execute("SELECT biomedclip_embed_text(%s)", (f"chest radiograph {k} {i} showing a small left pleural effusion",))
                    i += 1
                    done[k] += 1
        except psycopg.Error as e:
            errors.append(str(e))

    stop_at = [float("inf")]
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.monotonic()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0), errors


def latency(mode, n=40):
    with connect(**(BACKEND if mode == "backend" else {})) as c:
        c.execute("SELECT biomedclip_embed_text('load')")
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            c.execute("SELECT biomedclip_embed_text(%s)", (f"axial ct {i} of the abdomen with contrast",))
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def first_call(mode, n=8):
    times = []
    for i in range(n):
        with connect(**(BACKEND if mode == "backend" else {})) as c:
            t0 = time.perf_counter()
            c.execute("SELECT biomedclip_embed_text(%s)", (f"first call {i}",))
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    with connect() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        info = c.execute("SELECT biomedclip_model_info()").fetchone()[0]
    service_ready()
    mem = memory()
    rows = []
    for kind in ["images", "texts"]:
        rates = {}
        for mode in ["backend", "service"]:
            rates[mode] = throughput(kind, mode)
        rows.append((kind, rates))
    lat = {m: latency(m) for m in ["backend", "service"]}
    first = {m: first_call(m, 8 if m == "service" else 3) for m in ["backend", "service"]}
    with connect() as c:
        status = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
    cores = os.cpu_count()
    lines = [
        "# Inference service against backend mode",
        "",
        f"Full-size random-weight fp32 model ({info['name']}), one cluster, both modes in the same run "
        f"(`bash benches/inference/service.sh`, {time.strftime('%Y-%m-%d')}), {cores} cores. Backend mode: each session "
        "runs its own copy with biomedclip.intra_op_threads = 1 (the default); the service runs one batch at a time with "
        f"biomedclip.service_threads = 0 (one per core: {cores}).",
        "",
        "| measure | backend mode | service | ratio | target |",
        "|---|---|---|---|---|",
        f"| PSS added per connection that embedded an image and a text (MiB) | {mem[3]:.0f} ({mem[5]} connections) | "
        f"{mem[1]:.1f} ({mem[4]} connections) | {mem[1] / mem[3]:.3f} | service ≤ 50 MiB |",
    ]
    for kind, rates in rows:
        b, s = rates["backend"][0], rates["service"][0]
        target = "≥ 1.3×" if kind == "images" else "≥ 1.5×"
        lines.append(f"| 8 clients, single {kind[:-1]} per call ({kind}/s) | {b:.2f} | {s:.2f} | {s / b:.2f}× | {target} |")
    lines.append(f"| one caption on an idle server, median (ms) | {lat['backend']:.1f} | {lat['service']:.1f} | {lat['service'] / lat['backend']:.2f}× | ≤ 1.2× |")
    lines.append(f"| first call in a new connection, median (ms) | {first['backend']:.0f} | {first['service']:.1f} | | service ≤ 50 ms |")
    errors = [e for _, rates in rows for m in rates for e in rates[m][1]]
    lines += [
        "",
        f"- Idle server with the model loaded once in the service: {mem[0]:.0f} MiB PSS in all (postmaster, its children, the service).",
        f"- Errors during the throughput runs: {len(errors)}. Service counters at the end: {status['requests']} requests in "
        f"{status['batches']} batches ({status['images']} images, {status['texts']} texts).",
        "- Outputs: bit-identical to backend mode (tests/inference_service_suite.py compares every embedding of 8 concurrent "
        "sessions, texts of 1 to 40 tokens and images, with the same session's backend-mode result).",
    ]
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
