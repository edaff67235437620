\set n random(1, 100000)
SELECT embedding_dims(biomedclip_embed_text('pleural effusion with consolidation, case ' || :n));
