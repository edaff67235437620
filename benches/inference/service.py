"""Inference service against backend mode, side by side in one run on one cluster (benchmark).

usage: service.py PORT DATADIR RESULTS_MD

The cluster runs with shared_preload_libraries = 'biomedclip' and the full-size random-weight
fp32 model; backend mode is the same server with `SET biomedclip.inference = backend` per session
(superuser), so both modes see the same model, library, machine and moment.
Measured: total PSS of the server's processes, throughput of 8 clients sending single images
or single captions (3 rounds alternating the modes, medians; then the service with one
single-threaded lane per core),
idle latency of one caption, the first call in a new connection, and, as the ceiling batching can
reach here, ONNX Runtime's own images/s and texts/s per thread at batch 1 and 8 (the onnxruntime
wheel of the same version, no PostgreSQL).
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


def set_lanes(lanes):
    with connect() as c:
        before = c.execute("SELECT biomedclip_model_info()->'service'->>'pid'").fetchone()[0]
        c.execute(f"ALTER SYSTEM SET biomedclip.service_lanes = {int(lanes)}")
        c.execute("SELECT pg_reload_conf()")
    for _ in range(600):  # the supervisor restarts the service with the new setting
        time.sleep(0.1)
        try:
            with connect() as c:
                info = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
            if info and str(info.get("pid")) != str(before) and info.get("lanes") == lanes:
                return
        except psycopg.Error:
            pass
    raise RuntimeError(f"the service did not come back with {lanes} lane(s)")


def ort_ceiling():
    """ONNX Runtime alone, one thread: items/s at batch 1 and batch 8 for each tower."""
    import numpy as np
    import onnxruntime as ort

    model_dir = os.path.join(ROOT, "target", "models", "base")
    out = {}
    for tower in ["image", "text"]:
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(os.path.join(model_dir, f"{tower}_encoder.onnx"), o, providers=["CPUExecutionProvider"])

        def feed(bs):
            if tower == "image":
                return {sess.get_inputs()[0].name: np.random.default_rng(0).random((bs, 3, 224, 224), dtype=np.float32)}
            return {i.name: np.ones((bs, 16), dtype=np.int64) for i in sess.get_inputs()}  # a 16-token caption

        for bs in [1, 8]:
            f = feed(bs)
            sess.run(None, f)
            n = (2 if tower == "image" else 16) * (8 // bs)
            t0 = time.perf_counter()
            for _ in range(n):
                sess.run(None, f)
            out[(tower, bs)] = bs * n / (time.perf_counter() - t0)
    return out


def throughput(kind, mode, clients=8, seconds=10.0):
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
        rates = {"backend": [], "service": []}
        for _ in range(3):
            for mode in ["backend", "service"]:
                rates[mode].append(throughput(kind, mode))
        rows.append((kind, rates))
    with connect() as c:
        status = c.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0]
    lanes = info.get("service", {}).get("lanes", 0) if isinstance(info.get("service"), dict) else 0
    set_lanes(os.cpu_count())
    per_core_lanes = {kind: [throughput(kind, "service") for _ in range(3)] for kind in ["images", "texts"]}
    set_lanes(1)  # back to the default, waiting for the service; the reset below then changes nothing
    with connect() as c:
        c.execute("ALTER SYSTEM RESET biomedclip.service_lanes")
        c.execute("SELECT pg_reload_conf()")
    ceiling = ort_ceiling()
    lat = {m: latency(m) for m in ["backend", "service"]}
    first = {m: first_call(m, 8 if m == "service" else 3) for m in ["backend", "service"]}
    cores = os.cpu_count()
    lines = [
        "# Inference service against backend mode",
        "",
        f"Full-size random-weight fp32 model ({info['name']}), one cluster, both modes in the same run "
        f"(`bash benches/inference/service.sh`, {time.strftime('%Y-%m-%d')}), {cores} cores. Backend mode: each session "
        "runs its own copy with biomedclip.intra_op_threads = 1 (the default); the service runs with the defaults "
        f"biomedclip.service_threads = 0 (one per core: {cores}) and biomedclip.service_lanes = 1 ({lanes} lane of "
        f"{max(1, cores // max(1, lanes))} threads). Throughput: 3 rounds of 10 s alternating the modes, medians.",
        "",
        "| measure | backend mode | service | ratio | target |",
        "|---|---|---|---|---|",
        f"| PSS added per connection that embedded an image and a text (MiB) | {mem[3]:.0f} ({mem[5]} connections) | "
        f"{mem[1]:.1f} ({mem[4]} connections) | {mem[1] / mem[3]:.3f} | service ≤ 50 MiB |",
    ]
    med = lambda runs: statistics.median(r[0] for r in runs)  # noqa: E731
    for kind, rates in rows:
        b, s = med(rates["backend"]), med(rates["service"])
        target = "≥ 1.3×" if kind == "images" else "≥ 1.5×"
        lines.append(f"| 8 clients, single {kind[:-1]} per call ({kind}/s) | {b:.2f} | {s:.2f} | {s / b:.2f}× | {target} |")
    lines.append(f"| one caption on an idle server, median (ms) | {lat['backend']:.1f} | {lat['service']:.1f} | {lat['service'] / lat['backend']:.2f}× | ≤ 1.2× |")
    lines.append(f"| first call in a new connection, median (ms) | {first['backend']:.0f} | {first['service']:.1f} | | service ≤ 50 ms |")
    errors = [e for _, rates in rows for m in rates for r in rates[m] for e in r[1]]
    errors += [e for runs in per_core_lanes.values() for r in runs for e in r[1]]
    rounds = lambda runs: ", ".join(f"{r[0]:.2f}" for r in runs)  # noqa: E731
    lines += [
        "",
        "Rounds (items/s): " + "; ".join(f"{kind} backend {rounds(rates['backend'])}, service {rounds(rates['service'])}" for kind, rates in rows) + ".",
        "",
        f"- The service with {cores} single-threaded lanes (biomedclip.service_lanes = {cores}), medians of 3 rounds: "
        f"{med(per_core_lanes['images']):.2f} images/s, {med(per_core_lanes['texts']):.2f} texts/s.",
        f"- The ceiling batching can reach on this CPU, ONNX Runtime alone (one thread, no PostgreSQL): image tower "
        f"{ceiling[('image', 1)]:.2f} images/s at batch 1, {ceiling[('image', 8)]:.2f} at batch 8 "
        f"({ceiling[('image', 8)] / ceiling[('image', 1)]:.2f}×); text tower (16 tokens) {ceiling[('text', 1)]:.1f} texts/s at batch 1, "
        f"{ceiling[('text', 8)]:.1f} at batch 8 ({ceiling[('text', 8)] / ceiling[('text', 1)]:.2f}×).",
        f"- Idle server with the model loaded once in the service: {mem[0]:.0f} MiB PSS in all (postmaster, its children, the service).",
        f"- Errors during the throughput runs: {len(errors)}. Service counters after the side-by-side rounds: {status['requests']} requests in "
        f"{status['batches']} batches ({status['images']} images, {status['texts']} texts).",
        "- Outputs: bit-identical to backend mode (tests/inference_service_suite.py compares every embedding of 8 concurrent "
        "sessions, texts of 1 to 40 tokens and images, with the same session's backend-mode result).",
    ]
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
