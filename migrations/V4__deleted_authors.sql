-- Users whose posts are still being removed. DeleteUser removes the user and its follow edges in
-- one short transaction and records it here; a background purge then deletes its posts in
-- bounded batches (crates/ingest/src/store/users.rs) and removes the row once none is left.
-- Until then every read of a post checks that its author still exists.
CREATE TABLE deleted_authors (
    user_id     bigint      PRIMARY KEY,
    delete_time timestamptz NOT NULL DEFAULT now()
);
