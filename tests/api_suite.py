"""The API service (crates/biomedclip-api) against its own cluster: PostgREST-style JWT roles,
RLS through the API equal to RLS in SQL, the endpoints equal to their SQL functions, error JSON
with SQLSTATEs, limits (body, pool, statement_timeout), metrics, OpenAPI, TLS, graceful shutdown.
Tokens are made by PyJWT (the outside reference); every expected answer comes from SQL run as
the same role, or from numpy.

Usage: api_suite.py WORKDIR PGPORT APIPORT
"""
import base64
import concurrent.futures as cf
import json
import os
import ssl
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from suite import SHARED, check, finish, start_cluster, stop_cluster  # noqa: E402
import api_common as ac  # noqa: E402

WORK, PORT, API_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(14)
PNG = open(os.path.join(SHARED, "biomedclip/example_images", sorted(os.listdir(os.path.join(SHARED, "biomedclip/example_images")))[0]), "rb").read()
DICOM = open(os.path.join(SHARED, "dicom", sorted(f for f in os.listdir(os.path.join(SHARED, "dicom")) if f.startswith("CT"))[0]), "rb").read()


def sql_as(role, sql, args=()):
    with ac.connect(PORT) as c:
        c.execute(f"SET ROLE {role}")
        return c.execute(sql, args).fetchall()


def function_calls():
    """Calls of the extension's functions so far (track_functions = all)."""
    with ac.connect(PORT) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        return c.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname LIKE 'biomedclip%'").fetchone()[0]


def auth(api):
    now = int(time.time())
    tokens = {
        "no token": None,
        "forged signature": ac.token("ward_a", key=b"not-the-server-secret-0123456789abcdef"),
        "expired": ac.token("ward_a", exp_in=-120),
        "no exp": __import__("jwt").encode({"role": "ward_a"}, ac.SECRET, algorithm="HS256"),
        "alg none": __import__("jwt").encode({"role": "ward_a", "exp": now + 600}, None, algorithm="none"),
        "no role claim": ac.token(None),
        "unknown role": ac.token("nobody_at_all"),
        "postgres": ac.token("postgres"),
        "a role the authenticator is not a member of": ac.token("outsider"),
        "the authenticator itself quoted oddly": ac.token('ward_a"; RESET ROLE; --'),
    }
    endpoints = [("POST", "/v1/search", {"collection": "studies", "query": {"text": "effusion"}}),
                 ("POST", "/v1/embed/text", {"text": "effusion"}), ("POST", "/v1/embed/image", PNG),
                 ("POST", "/v1/zero-shot", {"embedding": [1.0] * 512, "labels": ["a", "b"]}),
                 ("POST", "/v1/feedback", {"query_id": 1, "result_id": "1", "action": "click"}),
                 ("GET", "/v1/model", None), ("GET", "/v1/collections", None), ("GET", "/v1/thumbnail/studies/0", None),
                 ("GET", "/v1/drift", None)]
    with ac.connect(PORT) as c:
        logged = c.execute("SELECT count(*) FROM biomedclip.query_log").fetchone()[0]
    calls = function_calls()
    wrong = []
    for name, tok in tokens.items():
        for method, path, body in endpoints:
            status, out, hdrs = api.request(method, path, body, tok)
            if status != 401 or not isinstance(out, dict) or "error" not in out or hdrs.get("WWW-Authenticate") != "Bearer":
                wrong.append(f"{name} {path}: {status}")
    time.sleep(0.6)
    with ac.connect(PORT) as c:
        logged_after = c.execute("SELECT count(*) FROM biomedclip.query_log").fetchone()[0]
    calls_after = function_calls()
    check(f"every endpoint refuses {len(tokens)} kinds of bad token with 401 and a JSON error ({len(tokens) * len(endpoints)} requests)",
          not wrong, f"wrong: {wrong[:4]}")
    check("and nothing ran: no extension function was called, no search was logged",
          calls_after == calls and logged_after == logged, f"function calls {calls} -> {calls_after}, log rows {logged} -> {logged_after}")
    status, out, _ = api.request("GET", "/v1/collections", None, ac.token("ward_a"))
    check("a valid token for an API role works", status == 200 and [c["name"] for c in out] == ["slow2", "slow20", "studies"], f"{status} {out}")


def rls_parity(api, x, sites):
    """200 queries, 100 per role: the API's ids equal SQL's as the same role, and no hidden row."""
    mismatch = hidden = short = 0
    for i in range(200):
        role, site = ("ward_a", "A") if i % 2 == 0 else ("ward_b", "B")
        q = rng.standard_normal(512).tolist()
        status, out, _ = api.request("POST", "/v1/search", {"collection": "studies", "query": {"embedding": q}, "k": 10}, ac.token(role))
        ids = [r["id"] for r in out["results"]] if status == 200 else None
        want = [r[0] for r in sql_as(role, "SELECT id FROM biomedclip_search('studies', %s, 10)", (json.dumps({"embedding": q}),))]
        mismatch += ids != want
        hidden += sum(sites[int(j)] != site for j in ids or [])
        short += len(ids or []) != 10
    check("RLS through the API equals RLS in SQL: 200 queries by two roles, same ids, 0 hidden rows, every LIMIT filled",
          mismatch == 0 and hidden == 0 and short == 0, f"mismatched {mismatch}, hidden {hidden}, short {short}")


def endpoints(api):
    tok = ac.token("ward_a")
    status, out, _ = api.request("POST", "/v1/search", {"collection": "studies", "query": {"text": "pleural effusion"}, "k": 5}, tok)
    want = sql_as("ward_a", "SELECT id, distance FROM biomedclip_search('studies', '{\"text\": \"pleural effusion\"}', 5)")
    check("a text search through the API equals the same search in SQL (ids and distances)",
          status == 200 and [r["id"] for r in out["results"]] == [w[0] for w in want]
          and np.allclose([r["distance"] for r in out["results"]], [w[1] for w in want]) and out["query_id"] is not None, f"{status}")
    qid, first = out["query_id"], out["results"][0]["id"]
    status, fb, _ = api.request("POST", "/v1/feedback", {"query_id": qid, "result_id": first, "action": "relevant"}, tok)
    row = ac.connect(PORT).execute("SELECT role, action, result_rank FROM biomedclip.query_feedback WHERE feedback_id = %s", (fb.get("feedback_id"),)).fetchone()
    check("feedback through the API lands as the token's role", status == 200 and row == ("ward_a", "relevant", 1), f"{status} {row}")
    status, e1, _ = api.request("POST", "/v1/embed/text", {"text": "Pleural Effusion"}, tok)
    want = json.loads(sql_as("ward_a", "SELECT biomedclip_embed_text('Pleural Effusion')::text")[0][0])
    status2, e2, _ = api.request("POST", "/v1/embed/image", PNG, tok, {"Content-Type": "image/png"})
    want2 = json.loads(sql_as("ward_a", "SELECT biomedclip_embed_image(%s)::text", (PNG,))[0][0])
    boundary = "----biomedclipboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + PNG + f"\r\n--{boundary}--\r\n".encode()
    status3, e3, _ = api.request("POST", "/v1/embed/image", form, tok, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    status4, e4, _ = api.request("POST", "/v1/embed/image?window=lung", DICOM, tok, {"Content-Type": "application/octet-stream"})
    want4 = json.loads(sql_as("ward_a", "SELECT biomedclip_embed_dicom(%s, 'lung')::text", (DICOM,))[0][0])
    check("embed/text, embed/image (raw and multipart) and a DICOM (found by its preamble, window from the URL) equal SQL",
          (status, status2, status3, status4) == (200, 200, 200, 200) and np.allclose(e1["embedding"], want, atol=1e-6)
          and np.allclose(e2["embedding"], want2, atol=1e-6) and np.allclose(e3["embedding"], want2, atol=1e-6)
          and np.allclose(e4["embedding"], want4, atol=1e-6), f"{(status, status2, status3, status4)}")
    status, zs, _ = api.request("POST", "/v1/zero-shot", {"image": base64.b64encode(PNG).decode(), "labels": ["chest X-ray", "brain MRI"]}, tok)
    want = sql_as("ward_a", "SELECT label, probability FROM biomedclip_zero_shot(biomedclip_embed_image(%s), ARRAY['chest X-ray', 'brain MRI'])", (PNG,))
    check("zero-shot through the API equals SQL", status == 200 and [(r["label"], round(r["probability"], 9)) for r in zs] == [(w[0], round(w[1], 9)) for w in want], f"{status}")
    status, thumb, hdrs = api.request("GET", "/v1/thumbnail/studies/0", None, tok)
    status_hidden, _, _ = api.request("GET", "/v1/thumbnail/studies/1", None, tok)
    check("a thumbnail of a visible row comes back as image/png (no-store); one hidden by RLS is 404",
          status == 200 and thumb == ac.png(0) and hdrs.get("Content-Type") == "image/png" and "no-store" in hdrs.get("Cache-Control", "")
          and status_hidden == 404, f"{status} {status_hidden}")
    status, m, _ = api.request("GET", "/v1/model", None, ac.token("monitor"))
    status_a, m_a, _ = api.request("GET", "/v1/model", None, tok)
    sha = ac.connect(PORT).execute("SELECT biomedclip_model_info() ->> 'manifest_sha256'").fetchone()[0]
    check("/v1/model gives the model's provenance to a role with EXECUTE on biomedclip_model_info; monitor without it gets 403 42501",
          status_a == 200 and m_a["model"]["manifest_sha256"] == sha and status == 403 and m["error"]["sqlstate"] == "42501", f"{status_a} {status}")
    status, d, _ = api.request("GET", "/v1/drift?window=2%20days", None, ac.token("monitor"))
    status_a, _, _ = api.request("GET", "/v1/drift", None, tok)
    check("/v1/drift for the monitor role (the searches above are in it); an analyst gets 403",
          status == 200 and d["collections"]["studies"]["days"][0]["queries"] >= 200 and status_a == 403, f"{status} {status_a}")
    # The log: API roles cannot read it; the query text is not in it.
    marker = "QX7MARKERTEXT"
    api.request("POST", "/v1/search", {"collection": "studies", "query": {"text": f"{marker} nodule"}}, tok)
    leaked = ac.connect(PORT).execute("SELECT count(*) FROM biomedclip.query_log l WHERE l::text ILIKE %s", (f"%{marker}%",)).fetchone()[0]
    try:
        sql_as("ward_a", "SELECT count(*) FROM biomedclip.query_log")
        readable = True
    except psycopg.errors.InsufficientPrivilege:
        readable = False
    check("the query log holds no query text (marker) and is not readable by the API roles", leaked == 0 and not readable, f"{leaked} {readable}")


def errors(api):
    tok = ac.token("ward_a")
    cases = {
        "bad query": (api.request("POST", "/v1/search", {"collection": "studies", "query": {"txt": "x"}}, tok), 400, "22023"),
        "unknown collection": (api.request("POST", "/v1/search", {"collection": "nope", "query": {"text": "x"}}, tok), 404, "42704"),
        "a role without EXECUTE": (api.request("POST", "/v1/embed/text", {"text": "x"}, ac.token("ward_c")), 403, "42501"),
        "an undecodable image": (api.request("POST", "/v1/embed/image", b"not an image at all", tok), 400, None),
    }
    wrong = {k: (r[0], r[1].get("error", {}).get("sqlstate") if isinstance(r[1], dict) else r[1][:40]) for k, (r, st, code) in cases.items()
             if r[0] != st or not isinstance(r[1], dict) or (code and r[1]["error"]["sqlstate"] != code) or "message" not in r[1]["error"]}
    check("errors are JSON with the SQLSTATE and PostgreSQL's message: 22023 → 400, 42704 → 404, 42501 → 403, bad image → 400", not wrong, str(wrong))
    big = b"\0" * (2 << 20)
    status, out, _ = api.request("POST", "/v1/embed/image", big, tok)
    check("a body over max_body_bytes (1 MiB here) is refused with 413", status == 413, f"{status}")
    status, out, hdrs = api.request("POST", "/v1/search", b"{not json", tok, {"Content-Type": "application/json"})
    check("a malformed JSON body is a 4xx, not a crash", 400 <= status < 500, f"{status}")


def meta(api):
    status, health, _ = api.request("GET", "/healthz")
    status_m, metrics, _ = api.request("GET", "/metrics")
    text = metrics.decode()
    check("/healthz is 200; /metrics counts requests and errors by route template and status, with latency histograms",
          status == 200 and 'biomedclip_api_requests_total{endpoint="/v1/search",status="200"}' in text
          and 'biomedclip_api_requests_total{endpoint="/v1/search",status="401"}' in text
          and 'biomedclip_api_request_duration_seconds_bucket{endpoint="/v1/search",le="+Inf"}' in text
          and "/v1/thumbnail/{collection}/{id}" in text and "studies/0" not in text, f"{status} {status_m}")
    status, doc, _ = api.request("GET", "/openapi.json")
    paths = set(doc.get("paths", {})) if isinstance(doc, dict) else set()
    want = {"/v1/search", "/v1/embed/text", "/v1/embed/image", "/v1/zero-shot", "/v1/feedback", "/v1/model", "/healthz", "/metrics",
            "/v1/collections", "/v1/thumbnail/{collection}/{id}", "/v1/drift"}
    check("/openapi.json is generated from the handlers and lists every endpoint", status == 200 and want <= paths and doc["openapi"].startswith("3."),
          f"missing {sorted(want - paths)}")
    status, page, hdrs = api.request("GET", "/")
    check("GET / serves the page with the not-a-medical-device notice under a strict CSP",
          status == 200 and b"not a medical device" in page and "default-src 'self'" in hdrs.get("Content-Security-Policy", ""), f"{status}")


def limits(secret_file):
    """Pool of 1 with a 100 ms wait, statement_timeout 1.5 s, against collections whose policy sleeps."""
    cfg = ac.write_config(os.path.join(WORK, "limits.toml"), PORT, API_PORT + 1, secret_file, pool_size=1, pool_timeout_ms=100,
                          statement_timeout_ms=1500)
    api = ac.Api(cfg, f"http://127.0.0.1:{API_PORT + 1}")
    tok = ac.token("ward_a")
    q = {"embedding": [1.0] * 512}
    try:
        with cf.ThreadPoolExecutor(2) as ex:
            slow = ex.submit(api.request, "POST", "/v1/search", {"collection": "slow2", "query": q}, tok)
            time.sleep(0.2)
            fast = ex.submit(api.request, "POST", "/v1/search", {"collection": "studies", "query": q}, tok)
            s1, s2 = slow.result()[0], fast.result()
        check("a full pool answers 503 after pool_timeout_ms, with a JSON error; the request holding it finishes",
              s1 == 200 and s2[0] == 503 and "busy" in s2[1]["error"]["message"], f"{s1} {s2[0]}")
        t = time.monotonic()
        status, out, _ = api.request("POST", "/v1/search", {"collection": "slow20", "query": q}, tok)
        took = time.monotonic() - t
        check("statement_timeout per request: 504 with SQLSTATE 57014 after about 1.5 s", status == 504 and out["error"]["sqlstate"] == "57014" and took < 4,
              f"{status} in {took:.2f} s")
        status, _, _ = api.request("POST", "/v1/search", {"collection": "studies", "query": q}, tok)
        check("the connection is usable again after the timeout (the aborted transaction was not pooled)", status == 200, f"{status}")
        # Graceful shutdown: a request in flight completes, then the process exits 0.
        with cf.ThreadPoolExecutor(1) as ex:
            inflight = ex.submit(api.request, "POST", "/v1/search", {"collection": "slow2", "query": q}, tok)
            time.sleep(0.2)
            api.proc.send_signal(15)
            status = inflight.result()[0]
        code = api.proc.wait(timeout=15)
        check("SIGTERM: the request in flight completes (200), then the service exits 0", status == 200 and code == 0, f"{status} exit {code}")
    finally:
        api.stop()


def tls_and_keys(secret_file):
    cert, key = os.path.join(WORK, "cert.pem"), os.path.join(WORK, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    cfg = ac.write_config(os.path.join(WORK, "tls.toml"), PORT, API_PORT + 2, secret_file, tls=(cert, key))
    ctx = ssl.create_default_context(cafile=cert)
    api = ac.Api.__new__(ac.Api)
    api.ctx = ctx
    api.__init__(cfg, f"https://127.0.0.1:{API_PORT + 2}")
    try:
        status, out, _ = api.request("POST", "/v1/search", {"collection": "studies", "query": {"text": "x"}}, ac.token("ward_a"), ctx=ctx)
        try:
            ac.Api.request(api, "GET", "/healthz") if False else None
            import urllib.request
            urllib.request.urlopen(f"http://127.0.0.1:{API_PORT + 2}/healthz", timeout=5)
            plain = "answered"
        except Exception:
            plain = "refused"
        check("TLS (rustls) when configured: HTTPS answers with the configured certificate, plain HTTP does not", status == 200 and plain == "refused", f"{status} {plain}")
    finally:
        api.stop()
    bad = ac.write_config(os.path.join(WORK, "open.toml"), PORT, API_PORT + 3, secret_file, listen=f"0.0.0.0:{API_PORT + 3}")
    r = subprocess.run([ac.API_BIN, "--config", bad], capture_output=True, text=True, timeout=20)
    check("plain HTTP on a non-loopback address is refused at start", r.returncode != 0 and "loopback" in r.stderr, f"exit {r.returncode}: {r.stderr.strip()[:100]}")
    # RS256 with a public key file; the HS256-with-the-public-key confusion attack is refused.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_file = os.path.join(WORK, "jwt_public.pem")
    open(pub_file, "wb").write(pub_pem)
    cfg = ac.write_config(os.path.join(WORK, "rs.toml"), PORT, API_PORT + 4, secret_file, rs256_public_key_file=pub_file)
    api = ac.Api(cfg, f"http://127.0.0.1:{API_PORT + 4}")
    try:
        good = ac.token("ward_a", key=private, alg="RS256")
        import hmac as _h, hashlib as _hl
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps({"role": "ward_a", "exp": int(time.time()) + 600}).encode()).rstrip(b"=")
        sig = base64.urlsafe_b64encode(_h.new(pub_pem, header + b"." + payload, _hl.sha256).digest()).rstrip(b"=")
        confused = (header + b"." + payload + b"." + sig).decode()
        s_good = api.request("GET", "/v1/collections", None, good)[0]
        s_conf = api.request("GET", "/v1/collections", None, confused)[0]
        check("RS256 with a public key file: a signed token works; an HS256 token keyed with the public key is 401", s_good == 200 and s_conf == 401, f"{s_good} {s_conf}")
    finally:
        api.stop()


def load(api):
    """8 clients for 10 s of text searches (benches/api runs 5 minutes): no errors."""
    stop = time.monotonic() + 10
    toks = [ac.token("ward_a" if i % 2 == 0 else "ward_b") for i in range(8)]
    errors, done = [], [0]
    lock = threading.Lock()

    def client(i):
        while time.monotonic() < stop:
            status, out, _ = api.request("POST", "/v1/search", {"collection": "studies", "query": {"text": f"finding {i} {done[0] % 50}"}, "k": 10}, toks[i])
            with lock:
                done[0] += 1
                if status != 200:
                    errors.append(status)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check("8 concurrent clients for 10 s of text searches: 0 errors", not errors and done[0] > 0, f"{done[0]} requests, errors {errors[:5]}")


def main():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    data = start_cluster(os.path.join(WORK, "data"), PORT, "track_functions = 'all'")
    api = None
    try:
        x, sites = ac.setup_database(PORT, rng)
        secret_file = os.path.join(WORK, "jwt_secret")
        open(secret_file, "wb").write(ac.SECRET)
        os.chmod(secret_file, 0o600)
        cfg = ac.write_config(os.path.join(WORK, "api.toml"), PORT, API_PORT, secret_file, max_body_bytes=1 << 20)
        api = ac.Api(cfg, f"http://127.0.0.1:{API_PORT}")
        auth(api)
        rls_parity(api, x, sites)
        endpoints(api)
        errors(api)
        meta(api)
        load(api)
        limits(secret_file)
        tls_and_keys(secret_file)
    finally:
        if api:
            api.stop()
        stop_cluster(data)
    finish()


main()
