DELETE FROM load_items WHERE id IN (SELECT id FROM load_items ORDER BY id LIMIT 20);
VACUUM load_items;
