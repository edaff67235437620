"""The README's SQL, executed verbatim: every ```sql block of README.md runs, statement by
statement and in order, in a fresh database whose placeholder tables (raw_images, ct_slices,
slides, t) and roles are filled from ../shared/data, so the README cannot drift from the code.
A block is left out only when it is listed in SKIP with the reason.

Usage: readme_suite.py PORT
"""
import os
import re
import sys

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from suite import ROOT, SHARED, check, finish  # noqa: E402

PORT = int(sys.argv[1])
DB = "biomedclip_readme"
# Blocks that cannot run verbatim here, by a phrase they contain, with the reason.
SKIP = {"/data/ct/0001.dcm": "reads files at site-specific server paths (the demo runs the same statement on ../shared)",
        "create_distributed_table": "needs a Citus cluster (tests/citus_suite.py runs this block verbatim on one)"}

FIXTURES = f"""
CREATE TABLE raw_images (id bigint, dept text, dicom_or_png_bytes bytea);
INSERT INTO raw_images
SELECT 9 + row_number() OVER (ORDER BY f), CASE WHEN f LIKE '%0%' THEN 'radiology' ELSE 'pathology' END,
       pg_read_binary_file('{SHARED}/medpix/images/' || f)
FROM (SELECT f FROM pg_ls_dir('{SHARED}/medpix/images') f WHERE f LIKE '%.png' ORDER BY f LIMIT 60) s;
CREATE TABLE ct_slices (id bigint, dcm bytea);
INSERT INTO ct_slices VALUES (7, pg_read_binary_file('{SHARED}/dicom/CT1_UNC.dcm')),
                             (8, pg_read_binary_file('{SHARED}/dicom/CT1_JPLL.dcm')),
                             (9, pg_read_binary_file('{SHARED}/dicom/CT1_RLE.dcm'));
CREATE TABLE slides (slide_id int, svs bytea);
INSERT INTO slides VALUES (1, pg_read_binary_file('{SHARED}/wsi/CMU-1-Small-Region.svs'));
"""
ROLES = ["radiology_analyst", "ml_steward", "compliance", "loader"]
# Roles the README itself creates: dropped before and after, never pre-created.
README_ROLES = ["biomedclip_authenticator"]


def sql_blocks():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.findall(r"```sql\n(.*?)```", text, re.S)


def statements(block):
    lines = [re.sub(r"\s--.*$|^--.*$", "", l) for l in block.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def main():
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        for r in README_ROLES:
            c.execute(f"DROP ROLE IF EXISTS {r}")
        for r in ROLES:
            c.execute(f"DROP ROLE IF EXISTS {r}")
            c.execute(f"CREATE ROLE {r}")
        c.execute(f"CREATE DATABASE {DB}")
    ran, failures, skipped = 0, [], []
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname=DB, autocommit=True) as c:
        c.execute(FIXTURES)
        for i, block in enumerate(sql_blocks()):
            reason = next((why for phrase, why in SKIP.items() if phrase in block), None)
            if reason:
                skipped.append(f"block {i}: {reason}")
                continue
            if "USING ivf" in block and " ON t " in block:
                c.execute("CREATE TABLE IF NOT EXISTS t (emb embedding(512))")
                c.execute("INSERT INTO t SELECT emb FROM images")
            for stmt in statements(block):
                try:
                    cur = c.execute(stmt)
                    if cur.description:
                        cur.fetchall()
                    ran += 1
                except psycopg.Error as e:
                    failures.append(f"block {i}: {stmt[:70]!r}: {e.diag.sqlstate} {str(e).strip()[:90]}")
        images = c.execute("SELECT count(*), count(emb) FROM images").fetchone()
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE {DB} WITH (FORCE)")
        for r in README_ROLES + ROLES:
            c.execute(f"DROP ROLE IF EXISTS {r}")
    for line in skipped:
        print("  skipped:", line)
    check("every SQL statement of the README runs verbatim", not failures and ran >= 25,
          f"{ran} statements from {len(sql_blocks())} blocks ran ({len(skipped)} block skipped with a reason); "
          f"images table: {images[0]} rows, {images[1]} embedded; failures: {failures[:3]}")
    finish()


if __name__ == "__main__":
    main()
