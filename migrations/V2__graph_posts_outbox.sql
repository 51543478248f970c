-- The follow graph. Rows are keyed by the follower, so the table can later be distributed by
-- follower id; the second index serves ListFollowers.
CREATE TABLE follows (
    follower_id bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    followee_id bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CONSTRAINT follows_no_self_follow CHECK (follower_id <> followee_id)
);
CREATE INDEX follows_followee_idx ON follows (followee_id, follower_id);

-- Orders the changes to one follower's followee set: taken while the follower's row is locked,
-- so per follower the version order is the commit order. The cache keeps the highest version
-- it has seen per edge, so a replayed or late change never undoes a newer one.
CREATE SEQUENCE graph_version_seq;

-- Posts, hash-partitioned by author. The primary key contains the author id, so the same
-- schema can be distributed by author id (Citus) when one PostgreSQL is not enough.
--
-- post_id = (milliseconds since 2020-01-01 UTC) << 22 | (post_id_seq mod 2^22): unique across
-- any number of ingest replicas (the sequence is shared; two posts would need 4M sequence
-- values within one millisecond to collide) and ordered by creation time.
--
-- A deleted post keeps its row with delete_time set and an empty body: cache rebuilds see it
-- and write a tombstone, so a late replay cannot resurrect it.
CREATE SEQUENCE post_id_seq;

CREATE TABLE posts (
    author_id   bigint      NOT NULL,
    post_id     bigint      NOT NULL,
    body        text        NOT NULL,
    create_time timestamptz NOT NULL,
    delete_time timestamptz,
    PRIMARY KEY (author_id, post_id)
) PARTITION BY HASH (author_id);

CREATE TABLE posts_p0 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 0);
CREATE TABLE posts_p1 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 1);
CREATE TABLE posts_p2 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 2);
CREATE TABLE posts_p3 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 3);
CREATE TABLE posts_p4 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 4);
CREATE TABLE posts_p5 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 5);
CREATE TABLE posts_p6 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 6);
CREATE TABLE posts_p7 PARTITION OF posts FOR VALUES WITH (MODULUS 8, REMAINDER 7);

-- GetPost and DeletePost by id alone.
CREATE INDEX posts_post_id_idx ON posts (post_id);
-- Timelines and feeds: an author's live posts, newest first. Ids are time-ordered, so
-- (create_time DESC, post_id DESC) is exactly post_id DESC.
CREATE INDEX posts_author_recent_idx ON posts (author_id, post_id DESC)
    WHERE delete_time IS NULL;

-- The transactional outbox: a cache change committed in the same transaction as the write it
-- mirrors. The request that wrote it applies it right after commit and deletes the row; the
-- relay re-drives whatever is left (Redis down, a crash between commit and warm).
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change      jsonb       NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text
);
