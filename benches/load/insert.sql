\set p random(1, 1000)
INSERT INTO load_items (emb) SELECT emb FROM load_pool WHERE pid = :p;
