-- Users. Ids come from an identity column; the handle is unique while the user exists.
CREATE TABLE users (
    user_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handle       text        NOT NULL,
    display_name text        NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_handle_key UNIQUE (handle),
    CONSTRAINT users_handle_format CHECK (handle ~ '^[a-z0-9_]{3,30}$'),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 64)
);

-- Idempotency keys (AIP-155): the first result of a create, keyed by the caller's request_id.
-- The row is inserted by the same statement as the resource it describes, so it exists exactly
-- when the resource was created. `request` is the canonical encoding of the request without its
-- request_id, so a reuse of the id with a different request can be told apart from a retry.
-- `response` is the first result (JSON), returned to every retry.
CREATE TABLE idempotency_keys (
    operation   text        NOT NULL,
    request_id  uuid        NOT NULL,
    request     bytea       NOT NULL,
    response    jsonb       NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operation, request_id)
);

CREATE INDEX idempotency_keys_create_time_idx ON idempotency_keys (create_time);
