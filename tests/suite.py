"""Helpers shared by the script-driven test suites: result reporting, clusters, vector text."""
import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.realpath(os.path.join(ROOT, "..", "shared", "data"))
PGBIN = "/usr/lib/postgresql/15/bin"
_results = []


def check(name, ok, detail):
    _results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def finish():
    """Prints the summary line the CI reads and exits non-zero on any failure."""
    failed = _results.count(False)
    print(f"{len(_results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def as_pg(cmd):
    return subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", cmd], capture_output=True, text=True)


def start_cluster(data, port, *conf):
    """Starts (creating if needed) a cluster in `data` with the test model configured."""
    subprocess.run(["bash", os.path.join(ROOT, "scripts/pg_cluster.sh"), "start", data, str(port), "max_connections = 50",
                    f"biomedclip.ort_library = '{ROOT}/target/onnxruntime/libonnxruntime.so.1.32.0'",
                    f"biomedclip.model_dir = '{ROOT}/target/models/tiny'", *conf], check=True)
    return data


PREVIOUS_RELEASE = "0.1.0"


def install_previous_release():
    """Copies the previous release's install script (sql/releases) into PostgreSQL's extension
    directory, so that `CREATE EXTENSION biomedclip VERSION '0.1.0'` works; returns the update
    scripts installed there."""
    sharedir = subprocess.run(["pg_config", "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
    src = os.path.join(ROOT, "sql", "releases", f"biomedclip--{PREVIOUS_RELEASE}.sql")
    shutil.copy(src, os.path.join(sharedir, "extension", f"biomedclip--{PREVIOUS_RELEASE}.sql"))
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(sharedir, "extension", "biomedclip--*--*.sql")))


def stop_cluster(data, mode="immediate"):
    as_pg(f"{PGBIN}/pg_ctl -D {data} -m {mode} -w stop")


def vec(v):
    return "[" + ",".join(f"{x:.6g}" for x in v) + "]"


def fresh_database(port, db, login_roles=()):
    """Drops and creates `db` and the roles (each dropped first, so that a rerun starts clean)."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {db}")
        for role in login_roles:
            c.execute(f"DROP ROLE IF EXISTS {role}")
            c.execute(f"CREATE ROLE {role} LOGIN")


def sqlstate(conn, sql, args=()):
    """The SQLSTATE a statement fails with, or None when it succeeds."""
    import psycopg

    try:
        conn.execute(sql, args).fetchall()
        return None
    except psycopg.Error as e:
        return e.diag.sqlstate
