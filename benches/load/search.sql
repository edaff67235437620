\set p random(1, 1000)
SELECT id FROM load_items ORDER BY emb <=> (SELECT emb FROM load_pool WHERE pid = :p) LIMIT 10;
