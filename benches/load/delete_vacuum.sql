DELETE FROM load_items WHERE id IN (SELECT id FROM load_items ORDER BY id LIMIT 3);
VACUUM (SKIP_LOCKED) load_items;
