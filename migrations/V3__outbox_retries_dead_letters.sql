-- The outbox relay retries each row on its own schedule: a row that keeps failing is pushed
-- back with an exponential backoff and never holds up the rows behind it.
ALTER TABLE outbox ADD COLUMN next_attempt_time timestamptz NOT NULL DEFAULT now();
CREATE INDEX outbox_due_idx ON outbox (attempts, id);

-- Rows that failed for good (a change this version cannot decode, a script Redis rejects, too
-- often): parked here for an operator, with the last error. Nothing reads them automatically.
CREATE TABLE outbox_dead_letters (
    id          bigint      PRIMARY KEY,
    change      jsonb       NOT NULL,
    create_time timestamptz NOT NULL,
    attempts    integer     NOT NULL,
    last_error  text,
    dead_time   timestamptz NOT NULL DEFAULT now()
);

-- Cache rebuilds read an author's newest deleted posts (their tombstones): without this index an
-- author with many deleted posts would be scanned in full.
CREATE INDEX posts_author_deleted_idx ON posts (author_id, post_id DESC)
    WHERE delete_time IS NOT NULL;
