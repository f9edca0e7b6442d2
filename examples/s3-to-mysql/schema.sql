-- The table the handler writes to (utf8mb4: object keys are any UTF-8 text, up to 1,024 bytes).
CREATE TABLE IF NOT EXISTS uploads (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    bucket VARCHAR(63) NOT NULL,
    object_key VARCHAR(1024) NOT NULL,
    size BIGINT UNSIGNED NOT NULL,
    etag VARCHAR(64),
    event_time VARCHAR(32),
    received_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
