"""Helpers for the API suites: a cluster with hospital roles and a searchable collection, tokens
signed by PyJWT (the outside reference for JWT), and the API binary started from a TOML file."""
import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import jwt
import numpy as np
import psycopg
from PIL import Image

from suite import ROOT, vec

API_BIN = os.path.join(ROOT, "target/bin/biomedclip-api")
DB = "biomedclip_api"
N = 2000
DIM = 512
SECRET = b"biomedclip-api-test-secret-0123456789abcdef"


def connect(port, user="postgres", db=DB):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, dbname=db, autocommit=True)


def png(i):
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(buf, "PNG")
    return buf.getvalue()


def setup_database(port, rng):
    """Roles as a hospital would set them up for the API: an authenticator that can only switch
    to the API roles; ward_a / ward_b see their own site's rows (RLS); monitor reads the log."""
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
        for role in ("authenticator", "ward_a", "ward_b", "ward_c", "monitor", "outsider"):
            c.execute(f"DROP ROLE IF EXISTS {role}")
        c.execute("CREATE ROLE authenticator LOGIN NOINHERIT")
        for role in ("ward_a", "ward_b", "ward_c", "monitor", "outsider"):
            c.execute(f"CREATE ROLE {role} NOLOGIN")
        c.execute("GRANT ward_a, ward_b, ward_c, monitor TO authenticator")
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    sites = ["A" if i % 2 == 0 else "B" for i in range(N)]
    with connect(port) as c:
        c.execute("CREATE EXTENSION biomedclip")
        c.execute(f"ALTER DATABASE {DB} SET biomedclip.query_log = on")
        c.execute("CREATE TABLE studies (id bigint PRIMARY KEY, site text, modality text, emb embedding(512), thumb bytea)")
        with c.cursor() as cur:
            with cur.copy("COPY studies (id, site, modality, emb, thumb) FROM STDIN") as cp:
                for i in range(N):
                    cp.write_row((i, sites[i], ["CT", "MR", "CR"][i % 3], vec(x[i]), png(i)))
        c.execute("CREATE INDEX ON studies USING ivf (emb embedding_cosine_ops) WITH (lists = 16)")
        c.execute("ANALYZE studies")
        c.execute("ALTER TABLE studies ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY by_site ON studies FOR SELECT USING (site = CASE current_user WHEN 'ward_a' THEN 'A' WHEN 'ward_b' THEN 'B' END)")
        c.execute("GRANT SELECT ON studies TO ward_a, ward_b, ward_c")
        for role in ("ward_a", "ward_b"):
            c.execute(f"SELECT count(*) FROM biomedclip_grant('{role}', 'analyst')")
        c.execute("SELECT count(*) FROM biomedclip_grant('monitor', 'monitor')")
        c.execute("SELECT biomedclip_register_collection('studies', 'studies', 'id', 'emb', ARRAY['site', 'modality'], 'thumb')")
        # Slow collections (a policy that sleeps per row), for pool exhaustion and statement_timeout.
        c.execute("CREATE FUNCTION public.slow_row() RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.3) IS NOT NULL'")
        for name, rows in (("slow2", 2), ("slow20", 20)):
            c.execute(f"CREATE TABLE {name} (id int, emb embedding(512))")
            c.execute(f"INSERT INTO {name} SELECT i, %s::embedding FROM generate_series(1, {rows}) i", (vec(x[0]),))
            c.execute(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
            c.execute(f"CREATE POLICY slow ON {name} FOR SELECT USING (public.slow_row())")
            c.execute(f"GRANT SELECT ON {name} TO ward_a")
            c.execute(f"SELECT biomedclip_register_collection('{name}', '{name}', 'id', 'emb', ARRAY[]::text[])")
    return x, sites


def token(role, exp_in=600, key=SECRET, alg="HS256", **extra):
    claims = {"exp": int(time.time()) + exp_in, **extra}
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, key, algorithm=alg)


def write_config(path, port, api_port, secret_file, **over):
    lines = [f'listen = "{over.pop("listen", f"127.0.0.1:{api_port}")}"',
             f'database = "host=127.0.0.1 port={port} user=authenticator dbname={DB}"']
    for key in ("pool_size", "pool_timeout_ms", "statement_timeout_ms", "max_body_bytes"):
        if key in over:
            lines.append(f"{key} = {over.pop(key)}")
    lines.append("[jwt]")
    if "rs256_public_key_file" in over:
        lines.append(f'rs256_public_key_file = "{over.pop("rs256_public_key_file")}"')
    else:
        lines.append(f'hs256_secret_file = "{secret_file}"')
    if "tls" in over:
        cert, key = over.pop("tls")
        lines += ["[tls]", f'cert_file = "{cert}"', f'key_file = "{key}"']
    assert not over, over
    open(path, "w").write("\n".join(lines) + "\n")
    return path


class Api:
    """The API binary, started from a config file, stopped with SIGTERM."""

    def __init__(self, config, base):
        self.base = base
        self.proc = subprocess.Popen([API_BIN, "--config", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited: {self.proc.stdout.read()}")
            try:
                if self.request("GET", "/healthz", ctx=getattr(self, "ctx", None))[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the API did not start")

    def request(self, method, path, body=None, tok=None, headers=None, ctx=None):
        """(status, parsed JSON or bytes, headers)."""
        data = None
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif body is not None:
            data = body
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
                status, raw, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), e.headers
        if hdrs.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(raw), hdrs
        return status, raw, hdrs

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode
