"""benches/api: 8 clients of text searches through the API (POST /v1/search) against the same
search in SQL as the same role, in alternating rounds (target/service/api_load), on a cluster
set up as tests/api_common.py does (2,000 rows, ivf, RLS, query log on). Writes results.md.

Usage: run.py WORKDIR PGPORT APIPORT ROUND_SECONDS ROUNDS [MODEL]
"""
import datetime
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../tests"))
from suite import ROOT, start_cluster, stop_cluster  # noqa: E402
import api_common as ac  # noqa: E402

WORK, PORT, API_PORT, SECS, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
MODEL = sys.argv[6] if len(sys.argv) > 6 else "tiny"
CLIENTS = 8

os.makedirs(WORK, exist_ok=True)
os.chmod(WORK, 0o755)
data = start_cluster(os.path.join(WORK, "data"), PORT, f"biomedclip.model_dir = '{ROOT}/target/models/{MODEL}'")
api = None
try:
    ac.setup_database(PORT, np.random.default_rng(1))
    secret = os.path.join(WORK, "jwt_secret")
    open(secret, "wb").write(ac.SECRET)
    api = ac.Api(ac.write_config(os.path.join(WORK, "api.toml"), PORT, API_PORT, secret, pool_size=CLIENTS), f"http://127.0.0.1:{API_PORT}")
    tok = ac.token("ward_a", exp_in=SECS * ROUNDS * 3 + 600)
    conninfo = f"host=127.0.0.1 port={PORT} user=authenticator dbname={ac.DB}"
    def load(clients, secs, rounds):
        out = subprocess.run([os.path.join(ROOT, "target/service/api_load"), api.base, tok, conninfo, "ward_a", "studies",
                              str(clients), str(secs), str(rounds)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    r = load(CLIENTS, SECS, ROUNDS)
    one = load(1, max(3, SECS // 4), ROUNDS)
    rss = int(open(f"/proc/{api.proc.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
finally:
    if api:
        api.stop()
    stop_cluster(data)

print(json.dumps(r, indent=1))
print(json.dumps(one, indent=1))
a, s = r["api"], r["sql"]
table = f"""# API benchmark: POST /v1/search (text query) against the same search in SQL

Run: `bash benches/api/run.sh` on {datetime.date.today()} ({os.cpu_count()} cores, shared machine). {CLIENTS} clients, {ROUNDS} alternating
rounds of {SECS} s per side ({SECS * ROUNDS} s of load on each side), model `{MODEL}`; 2,000 rows of `embedding(512)` with an
`ivf` index and row-level security; the query log on (both sides write it). Clients: target/service/api_load (Rust,
keep-alive HTTP/1.1 for the API; one session per client for SQL, `SET ROLE ward_a` once, a prepared statement). Every
API request is a transaction of its own: a cached role check (superuser/BYPASSRLS, kept 5 s), a pool checkout, then
`BEGIN; SET LOCAL ROLE; SET LOCAL statement_timeout; SET LOCAL search_path`, the search (a cached prepared statement) and
`COMMIT` pipelined in one round trip.

| | requests | errors | p50 ms | p99 ms | requests/s |
|---|---|---|---|---|---|
| API (`POST /v1/search`) | {a['requests']} | {a['errors']} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {a['throughput_per_s']:.1f} |
| SQL (`biomedclip_search` as the role) | {s['requests']} | {s['errors']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['throughput_per_s']:.1f} |
| API overhead | | | **{r['overhead_p50_ms']:.2f}** | {r['overhead_p99_ms']:.2f} | |

One client alone ({ROUNDS} rounds of {max(3, SECS // 4)} s per side), the overhead without queueing for the 2 cores:

| | requests | errors | p50 ms | p99 ms |
|---|---|---|---|---|
| API | {one['api']['requests']} | {one['api']['errors']} | {one['api']['p50_ms']:.2f} | {one['api']['p99_ms']:.2f} |
| SQL | {one['sql']['requests']} | {one['sql']['errors']} | {one['sql']['p50_ms']:.2f} | {one['sql']['p99_ms']:.2f} |
| API overhead | | | **{one['overhead_p50_ms']:.2f}** | {one['overhead_p99_ms']:.2f} |

Target: 0 errors and an overhead of at most 2 ms at p50. API service RSS at the end: {rss} MiB.
"""
open(os.path.join(HERE, "results.md" if MODEL == "tiny" else f"results_{MODEL}.md"), "w").write(table)
print(table)
