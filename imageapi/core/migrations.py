"""Numbered schema migrations. Append only: never edit a migration that has shipped.

Numbers taken: 1 core store (libraries, files, dirs, scans, tags).
2 faces backlog and people, 3 users and auth, 4 video caches, 5 insights, 6 folder seen_at, 7 folder fingerprint,
8 the tools behind an unsupported thumbnail, 9 users never reuse ids, token keys, 10 stored form of
file names, 11 tag keys, 12 browser sessions, 13 login counts and job leases, 14 work leases,
15 the listing's date order, 16 faces drawn by hand in PostgreSQL, 17 the HLS backlog,
18 face clusters, 19 places and time zones from GPS, 20 search, 21 perceptual hashes, 22 the map,
24 the place tree of one library (23 is unused).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    # Python run after `sql` in the same transaction, for what SQL cannot say (Unicode rules).
    step: Callable[[sqlite3.Connection], None] | None = None


CORE = """
CREATE TABLE libraries (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    root        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    library_id      INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
    rel_path        TEXT NOT NULL,           -- relative to the library root, '/'-separated
    dir             TEXT NOT NULL,           -- parent folder of rel_path ('' at the root)
    kind            TEXT NOT NULL CHECK (kind IN ('image', 'heic', 'raw', 'video', 'other')),
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    content_hash    TEXT,                    -- blake3 of the whole file, hex
    taken_at        TEXT,                    -- local wall-clock time, ISO 8601 without offset
    taken_at_offset INTEGER,                 -- minutes east of UTC, when known
    taken_at_source TEXT,                    -- exif_original, exif_digitized, xmp, video, mtime
    make            TEXT,
    model           TEXT,
    lens            TEXT,
    orientation     INTEGER,
    width           INTEGER,
    height          INTEGER,
    gps_lat         REAL,
    gps_lon         REAL,
    gps_alt         REAL,
    exposure_time   REAL,
    f_number        REAL,
    iso             INTEGER,
    focal_length    REAL,
    duration        REAL,
    rotation        INTEGER,
    video_codec     TEXT,
    audio_codec     TEXT,
    thumb_state     TEXT NOT NULL DEFAULT 'pending'
                    CHECK (thumb_state IN ('pending', 'done', 'unsupported', 'failed')),
    thumb_reason    TEXT,
    error           TEXT,                    -- why reading this file failed, if it did
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    UNIQUE (library_id, rel_path)
);
CREATE INDEX files_by_hash ON files(content_hash);
CREATE INDEX files_by_dir ON files(library_id, dir);
CREATE INDEX files_by_taken ON files(taken_at);
CREATE INDEX files_unhashed ON files(id) WHERE content_hash IS NULL;

-- Folder mtimes seen by the last scan that listed them: a quick scan re-lists only folders whose
-- mtime moved (entries added, removed or renamed in them).
CREATE TABLE dirs (
    library_id  INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
    rel_path    TEXT NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    PRIMARY KEY (library_id, rel_path)
) WITHOUT ROWID;

CREATE TABLE scans (
    id                  INTEGER PRIMARY KEY,
    library_id          INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
    mode                TEXT NOT NULL CHECK (mode IN ('full', 'quick')),
    subtree             TEXT NOT NULL DEFAULT '',
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    status              TEXT NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    scanned             INTEGER NOT NULL DEFAULT 0,
    added               INTEGER NOT NULL DEFAULT 0,
    changed             INTEGER NOT NULL DEFAULT 0,
    removed             INTEGER NOT NULL DEFAULT 0,
    moved               INTEGER NOT NULL DEFAULT 0,
    hashed              INTEGER NOT NULL DEFAULT 0,
    thumbs_made         INTEGER NOT NULL DEFAULT 0,
    thumbs_unsupported  INTEGER NOT NULL DEFAULT 0,
    thumbs_failed       INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    error               TEXT
);

-- Tags follow content, not paths: a moved or renamed file keeps its tags.
CREATE TABLE tags (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at  TEXT NOT NULL
);
CREATE TABLE content_tags (
    content_hash TEXT NOT NULL,
    tag_id       INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (content_hash, tag_id)
) WITHOUT ROWID;
CREATE INDEX content_tags_by_tag ON content_tags(tag_id);
"""

MIGRATIONS: list[Migration] = [
    Migration(1, "core", CORE),
]

# 3: users of the server. `tokens_valid_after` (unix seconds) lets a password change or
# `imageapi user passwd` refuse every token issued before it.
USERS = """
CREATE TABLE users (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash       TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    tokens_valid_after  INTEGER NOT NULL DEFAULT 0
);
"""
MIGRATIONS.append(Migration(3, "users", USERS))

# 2: the face backlog and people. Everything keys on content_hash, like tags: duplicates of a photo
# share one detect call, and a moved file keeps its faces.
FACES = """
CREATE TABLE persons (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,   -- matched against tags, case-insensitively
    created_at  TEXT NOT NULL
);

-- One row per face Apollo found. bbox is relative to the sent (upright) image, 0..1.
CREATE TABLE faces (
    id           INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL,
    idx          INTEGER NOT NULL,                      -- position in Apollo's answer
    x            REAL NOT NULL,
    y            REAL NOT NULL,
    w            REAL NOT NULL,
    h            REAL NOT NULL,
    score        REAL NOT NULL,
    embedding    BLOB NOT NULL,                         -- float32, little-endian
    model        TEXT NOT NULL,
    person_id    INTEGER REFERENCES persons(id) ON DELETE SET NULL,
    bound_by     TEXT CHECK (bound_by IN ('auto', 'bootstrap', 'manual')),
    bound_at     TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (content_hash, idx)
);
CREATE INDEX faces_by_person ON faces(person_id) WHERE person_id IS NOT NULL;
-- A person appears at most once in a photo.
CREATE UNIQUE INDEX faces_one_per_person ON faces(content_hash, person_id) WHERE person_id IS NOT NULL;

-- Content whose detection is done, written in the same transaction as its faces.
CREATE TABLE face_scans (
    content_hash TEXT PRIMARY KEY,
    model        TEXT NOT NULL,
    face_count   INTEGER NOT NULL,
    scanned_at   TEXT NOT NULL
) WITHOUT ROWID;

-- Content whose detection failed: transient ones wait until next_attempt_at, permanent ones
-- until `imageapi faces retry-failed`.
CREATE TABLE face_failures (
    content_hash    TEXT PRIMARY KEY,
    permanent       INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL,
    last_error      TEXT NOT NULL,
    next_attempt_at TEXT,                               -- NULL when permanent
    updated_at      TEXT NOT NULL
) WITHOUT ROWID;

-- Small named values of the face passes (e.g. how far the tag sweep of autobind has got).
CREATE TABLE face_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""
MIGRATIONS.append(Migration(2, "faces", FACES))

# 5: AI insights. Insights and their conversations belong to content (like tags and faces), so
# they follow a photo that moves. A generated insight starts a thread (thread_id = its own id);
# an amended one joins the thread it revises. insight_messages is the thread's transcript in the
# order the model saw it (user, assistant with tool calls, tool results, assistant...); the system
# prompt is rebuilt on every turn and not stored.
INSIGHTS = """
CREATE TABLE insights (
    id            INTEGER PRIMARY KEY,
    content_hash  TEXT NOT NULL,
    thread_id     INTEGER REFERENCES insights(id) ON DELETE CASCADE,
    amended_from  INTEGER REFERENCES insights(id) ON DELETE SET NULL,
    title         TEXT NOT NULL,
    body          TEXT NOT NULL,
    tools         TEXT NOT NULL,        -- JSON [{name, arguments, result}]
    backend       TEXT NOT NULL,        -- local or hybrid
    server        TEXT NOT NULL,        -- the URL that answered
    model         TEXT NOT NULL,
    failovers     TEXT NOT NULL,        -- JSON [{url, model, reason}]
    timings       TEXT NOT NULL,        -- JSON {total_ms, model_ms, tools_ms, rounds, capped}
    created_at    TEXT NOT NULL
);
CREATE INDEX insights_by_hash ON insights(content_hash, id);
CREATE INDEX insights_by_thread ON insights(thread_id);

CREATE TABLE insight_messages (
    id            INTEGER PRIMARY KEY,
    thread_id     INTEGER NOT NULL REFERENCES insights(id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content       TEXT NOT NULL,
    tool_calls    TEXT,                 -- assistant: JSON [{id, name, arguments}]
    tool_call_id  TEXT,                 -- tool: the call it answers
    tool_name     TEXT,
    backend       TEXT,                 -- assistant: who answered
    server        TEXT,
    model         TEXT,
    created_at    TEXT NOT NULL,
    UNIQUE (thread_id, seq)
);

-- One summary per day and contact of the SMS API's messages, with its embedding (float32,
-- little-endian, unit length) and the embedding model: only vectors of one model are compared.
CREATE TABLE conversation_summaries (
    id              INTEGER PRIMARY KEY,
    day             TEXT NOT NULL,      -- YYYY-MM-DD
    contact         TEXT NOT NULL,
    summary         TEXT NOT NULL,
    message_count   INTEGER NOT NULL,
    model           TEXT NOT NULL,
    server          TEXT NOT NULL,
    embedding_model TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    embedding       BLOB NOT NULL,      -- last: reading the columns before it skips its overflow pages
    UNIQUE (day, contact)
);
CREATE INDEX conversation_summaries_by_day ON conversation_summaries(day);

-- Reverse geocoding answers (Nominatim asks clients to cache), keyed by position rounded to
-- 1e-4 degrees (about 11 m).
CREATE TABLE geocode_cache (
    source      TEXT NOT NULL,
    lat_key     INTEGER NOT NULL,
    lon_key     INTEGER NOT NULL,
    result      TEXT NOT NULL,          -- JSON
    fetched_at  TEXT NOT NULL,
    PRIMARY KEY (source, lat_key, lon_key)
) WITHOUT ROWID;
"""
MIGRATIONS.append(Migration(5, "insights", INSIGHTS))

# 4: the video caches' state on each video's row. A preview clip (and its GIF) is current when
# preview_source equals the row's "size:mtime_ns:rel_path" (a changed or moved file is due again);
# preview_state says whether that attempt made them or failed (then preview_error says why, and the
# file is not retried until it changes or `imageapi video previews --retry-failed`). hls_error is
# the last failed HLS generation of the source version hls_source ("size-mtime_ns"), so requests
# answer it again instead of running ffmpeg on a broken file each time.
VIDEO = """
ALTER TABLE files ADD COLUMN preview_state TEXT CHECK (preview_state IN ('done', 'failed'));
ALTER TABLE files ADD COLUMN preview_source TEXT;
ALTER TABLE files ADD COLUMN preview_error TEXT;
ALTER TABLE files ADD COLUMN hls_source TEXT;
ALTER TABLE files ADD COLUMN hls_error TEXT;
ALTER TABLE files ADD COLUMN hls_error_code TEXT;
-- The preview backlog: videos whose clip is missing or stale (imageapi.core.previews.DUE_SQL).
CREATE INDEX files_preview_due ON files(id)
    WHERE kind = 'video' AND preview_source IS NOT size || ':' || mtime_ns || ':' || rel_path;
-- The video wall: videos of a library, newest first.
CREATE INDEX files_videos_by_taken ON files(library_id, COALESCE(taken_at, '')) WHERE kind = 'video';
"""
MIGRATIONS.append(Migration(4, "video", VIDEO))

# 6: when a scan last listed each folder. Listing a folder sees every file in it, so a file's
# "last seen" is the later of its row's last_seen (when it was last read) and its folder's seen_at:
# an unchanged re-scan writes one row per folder, not one per file.
FOLDER_SEEN = """
ALTER TABLE dirs ADD COLUMN seen_at TEXT;
"""
MIGRATIONS.append(Migration(6, "folder_seen", FOLDER_SEEN))

# 7: a fingerprint of what each folder held when last listed (imageapi.core.walk: the sum of its
# media entries' name, size and mtime): a full scan compares file rows only in folders whose
# fingerprint moved. NULL (folders recorded before this) means "compare".
FOLDER_FINGERPRINT = """
ALTER TABLE dirs ADD COLUMN fingerprint INTEGER;
"""
MIGRATIONS.append(Migration(7, "folder_fingerprint", FOLDER_FINGERPRINT))

# 8: the external tools (and versions) in use when a video's or RAW's thumbnail was found
# unsupported: when they change (a new ffmpeg, exiftool installed) the file is tried again.
# Sentinels from before this (among them every video's under ffmpeg 5.1, whose parsing of a bare
# -autorotate made frame grabs fail) are marked so that they are tried once.
THUMB_TOOL = """
ALTER TABLE files ADD COLUMN thumb_tool TEXT;
UPDATE files SET thumb_tool = 'unknown' WHERE thumb_state = 'unsupported' AND kind IN ('video', 'raw');
CREATE INDEX files_unsupported_by_tool ON files(kind, thumb_tool) WHERE thumb_state = 'unsupported';
"""
MIGRATIONS.append(Migration(8, "thumb_tool", THUMB_TOOL))

# 9: user ids are never reused (AUTOINCREMENT) and every user has a random token key, carried in
# each token (core/users.py): before this, a new user took the id of the last one removed, with
# tokens_valid_after 0, and the removed user's tokens passed for the new one. The table is rebuilt
# (SQLite cannot add AUTOINCREMENT in place) keeping every id; sqlite_sequence starts at the highest
# id there is, the highest one known (a removed user's id above it left no trace, but its tokens
# carry no key and are refused). Tokens issued before this carry no key: they stop working.
USERS_AUTOINCREMENT = """
CREATE TABLE users_new (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash       TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    tokens_valid_after  INTEGER NOT NULL DEFAULT 0,
    token_key           TEXT NOT NULL
);
INSERT INTO users_new (id, name, password_hash, created_at, tokens_valid_after, token_key)
    SELECT id, name, password_hash, created_at, tokens_valid_after, lower(hex(randomblob(16))) FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
DELETE FROM sqlite_sequence WHERE name = 'users';
INSERT INTO sqlite_sequence (name, seq) SELECT 'users', MAX(id) FROM users HAVING MAX(id) IS NOT NULL;
"""
MIGRATIONS.append(Migration(9, "users_autoincrement", USERS_AUTOINCREMENT))

# 11: one tag however it is typed (imageapi.core.tags.tag_key: case in any script, Unicode
# normalization, spacing). tags.key holds the rule's result; tags that were distinct only by it
# are merged into the first made, and every file keeps its links.
def _merge_equal_tags(conn: sqlite3.Connection) -> None:
    from imageapi.core.tags import merge_equal_tags  # tags needs the db module, which needs this one

    merge_equal_tags(conn)


TAG_KEYS = """
ALTER TABLE tags ADD COLUMN key TEXT;
"""
MIGRATIONS.append(Migration(11, "tag_keys", TAG_KEYS, _merge_equal_tags))

# 10: paths are kept in a stored form that can hold any file name (imageapi.core.names): a byte that
# is not UTF-8 is written as U+FFFD and two hex digits, and a U+FFFD that is really in a name is
# doubled. Names indexed before were valid UTF-8; the few that hold a U+FFFD are doubled here.
STORED_NAMES = """
UPDATE files SET rel_path = replace(rel_path, char(65533), char(65533, 65533)),
                 dir = replace(dir, char(65533), char(65533, 65533)),
                 preview_source = replace(preview_source, char(65533), char(65533, 65533))
    WHERE instr(rel_path, char(65533)) > 0;
UPDATE dirs SET rel_path = replace(rel_path, char(65533), char(65533, 65533))
    WHERE instr(rel_path, char(65533)) > 0;
UPDATE scans SET subtree = replace(subtree, char(65533), char(65533, 65533))
    WHERE instr(subtree, char(65533)) > 0;
"""
MIGRATIONS.append(Migration(10, "stored_names", STORED_NAMES))

# 12: browser sessions (imageapi.core.sessions). The cookie holds a random secret; only its
# blake2b digest is stored, so a copy of the database opens no session. Rows go with their user.
SESSIONS = """
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,            -- blake2b-256 of the cookie's secret, hex
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_key   TEXT NOT NULL,               -- the user's token key when it began (users.token_key)
    created_at  INTEGER NOT NULL,            -- unix seconds
    expires_at  INTEGER NOT NULL             -- unix seconds
) WITHOUT ROWID;
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
"""
MIGRATIONS.append(Migration(12, "sessions", SESSIONS))

# 13: state every server process and host shares through the database. The login throttle's counts
# (imageapi.core.throttle), and the job lock's lease (imageapi.core.lock), which replaces a flock
# next to the database file (a flock works neither for PostgreSQL nor across hosts).
SHARED_STATE = """
CREATE TABLE login_counts (
    id            TEXT PRIMARY KEY,      -- what is counted: an address and a name, an address, a name
    failures      INTEGER NOT NULL,      -- failed and reserved attempts
    not_before    REAL NOT NULL,         -- unix seconds: no attempt of this count is checked before
    last_failure  REAL NOT NULL          -- unix seconds
) WITHOUT ROWID;
CREATE INDEX login_counts_by_last ON login_counts(last_failure);
CREATE TABLE job_leases (
    name        TEXT PRIMARY KEY,        -- what is locked
    holder      TEXT NOT NULL,           -- random, one per acquisition
    host        TEXT NOT NULL,           -- the holder's host name (for messages)
    machine     TEXT NOT NULL,           -- kernel boot and pid namespace: where `pid` means something
    pid         INTEGER NOT NULL,
    job         TEXT NOT NULL,           -- the command holding it
    expires_at  REAL NOT NULL            -- unix seconds; pushed on by the holder's heartbeat
) WITHOUT ROWID;
"""
MIGRATIONS.append(Migration(13, "shared_state", SHARED_STATE))

# 14: leases on backlog items (imageapi.core.repositories.leases): `imageapi worker` processes on any host claim
# thumbnails, hashes, face scans and previews here, so no item is worked by two at once. `item` is the
# row id (as text) or, for faces, the content hash; `token` grows each time the item is taken over;
# `expires_at` is unix seconds. A lease whose holder died expires and the item goes back.
WORK_LEASES = """
CREATE TABLE work_leases (
    kind        TEXT NOT NULL,
    item        TEXT NOT NULL,
    holder      TEXT NOT NULL,               -- host:pid:random of the worker
    token       INTEGER NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (kind, item)
) WITHOUT ROWID;
CREATE INDEX work_leases_by_holder ON work_leases(holder);
"""
MIGRATIONS.append(Migration(14, "work_leases", WORK_LEASES))

# /photos sorted by date (the default) walks this index and stops after a page, instead of sorting
# every file of the library for each page (2.1 s per page at 1,000,000 files; bench_backends). The
# expression is the listing's sort key, word for word (repositories/listing.py SORT_KEYS).
LISTING_ORDER = """
CREATE INDEX files_by_library_taken ON files(library_id, COALESCE(taken_at, ''), id);
"""
MIGRATIONS.append(Migration(15, "listing_order", LISTING_ORDER))

# A face box drawn by hand has no embedding: an empty BLOB here, which SQLite holds as it is.
# PostgreSQL's vector column cannot hold zero dimensions, so there it becomes NULL (the twin).
MIGRATIONS.append(Migration(16, "manual_faces", ""))

# 17: the HLS backlog `imageapi worker --kinds hls` drains: videos whose playlist was neither made
# nor failed for the row's version ("size-mtime_ns", the key hls_source holds; migration 4). The
# same expression as repositories/work.py's, so the partial index answers.
HLS_DUE = """
CREATE INDEX files_hls_due ON files(id) WHERE kind = 'video' AND hls_source IS NOT size || '-' || mtime_ns;
"""
MIGRATIONS.append(Migration(17, "hls_due", HLS_DUE))

# 18: face clusters. A person may be an unnamed cluster of faces (name NULL; names stay unique,
# case aside, among named persons: UNIQUE lets NULLs repeat). "Not this person": a face the user
# unbound from a person, never bound to them again by a rule (autobind, clustering, merge).
# SQLite cannot drop a NOT NULL, so persons is rebuilt; DROP TABLE's implicit delete would set
# faces.person_id to NULL (ON DELETE SET NULL), so the bindings are kept aside and put back.
FACE_CLUSTERS = """
CREATE TEMP TABLE faces_bound_18 AS SELECT id, person_id, bound_by, bound_at FROM faces WHERE person_id IS NOT NULL;
CREATE TABLE persons_18 (
    id          INTEGER PRIMARY KEY,
    name        TEXT UNIQUE COLLATE NOCASE,            -- NULL: an unnamed cluster
    created_at  TEXT NOT NULL
);
INSERT INTO persons_18 (id, name, created_at) SELECT id, name, created_at FROM persons;
DROP TABLE persons;
ALTER TABLE persons_18 RENAME TO persons;
UPDATE faces SET person_id = (SELECT k.person_id FROM faces_bound_18 k WHERE k.id = faces.id),
                 bound_by = (SELECT k.bound_by FROM faces_bound_18 k WHERE k.id = faces.id),
                 bound_at = (SELECT k.bound_at FROM faces_bound_18 k WHERE k.id = faces.id)
    WHERE id IN (SELECT id FROM faces_bound_18);
DROP TABLE faces_bound_18;
CREATE TABLE face_rejections (
    face_id     INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    person_id   INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (face_id, person_id)
) WITHOUT ROWID;
CREATE INDEX face_rejections_by_person ON face_rejections(person_id);
CREATE INDEX faces_unbound_by_model ON faces(model, id) WHERE person_id IS NULL;
"""
MIGRATIONS.append(Migration(18, "face_clusters", FACE_CLUSTERS))

# 19: places and time zones from GPS, offline (core/places.py). The place of a file with GPS:
# city or town, region, country and its ISO 3166 code; place_key is the GPS it was computed from
# and the dataset's version ("<lat>,<lon>@<version>"), NULL when not computed yet, so a new
# position or a new dataset makes the row due again. taken_at_offset_source says where
# taken_at_offset came from: 'exif' (the camera recorded it), 'gps' (the time zone of where it
# was taken, at that date), 'none' (unknown; NULL on rows indexed before this migration).
PLACES = """
ALTER TABLE files ADD COLUMN place_city TEXT;
ALTER TABLE files ADD COLUMN place_region TEXT;
ALTER TABLE files ADD COLUMN place_country TEXT;
ALTER TABLE files ADD COLUMN place_cc TEXT;
ALTER TABLE files ADD COLUMN place_key TEXT;
ALTER TABLE files ADD COLUMN taken_at_offset_source TEXT;
CREATE INDEX files_by_place ON files(place_cc, place_region, place_city) WHERE place_cc IS NOT NULL;
CREATE INDEX files_place_due ON files(id) WHERE gps_lat IS NOT NULL AND place_key IS NULL;
"""
MIGRATIONS.append(Migration(19, "places", PLACES))

# 20: the search index (imageapi.core.search). search_docs holds each file's text, folded by Python
# (NFKD, marks dropped, casefold) so both engines index the same tokens: `body` the words (places,
# camera, lens, file and folder names, tags, named persons, insight titles), `facets` the filters
# ('_l<library>', '_k<kind>', '_g' with GPS, '_p<person>', '_t<tag>', '_c<camera word>'). docid
# orders by taken_at (seconds since year 1, shifted left 24 bits, plus the file id's low bits), so
# a date range is a docid range and newest-first is docid order: search_fts walks it without a
# sort. search_fts is FTS5 over search_docs (external content). The triggers mark a file dirty in
# the transaction that changes what it is found by (its row, its content's tags, faces bound to a
# named person, insights, a person's or tag's name); the search service refreshes dirty files.
# `gen` grows with each mark, so a refresh that read a file before a newer change keeps it dirty.
# search_terms holds every token indexed (some maybe no longer in any document): a query word of
# four letters or more is looked up there and asked of FTS5 as the few whole terms it begins
# (`"canon" OR "canonical"`), which FTS5 reads lazily in docid order, where `"canon"*` (beyond the
# prefix indexes' 2 and 3 letters) would first merge the whole doclist (20 ms for 200,000 files).
SEARCH = """
CREATE TABLE search_docs (
    docid    INTEGER PRIMARY KEY,
    file_id  INTEGER NOT NULL UNIQUE,
    body     TEXT NOT NULL,
    facets   TEXT NOT NULL
);
CREATE VIRTUAL TABLE search_fts USING fts5(
    body, facets, content='search_docs', content_rowid='docid', prefix='2 3',
    tokenize="unicode61 remove_diacritics 0 tokenchars '_'"
);
CREATE TABLE search_dirty (
    file_id  INTEGER PRIMARY KEY,
    gen      INTEGER NOT NULL
);
CREATE TABLE search_terms (
    term     TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TRIGGER search_files_insert AFTER INSERT ON files BEGIN
    INSERT INTO search_dirty (file_id, gen) VALUES (new.id, 1)
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_files_update AFTER UPDATE ON files
WHEN old.rel_path IS NOT new.rel_path OR old.library_id IS NOT new.library_id OR old.kind IS NOT new.kind
    OR old.taken_at IS NOT new.taken_at OR old.make IS NOT new.make OR old.model IS NOT new.model
    OR old.lens IS NOT new.lens OR old.gps_lat IS NOT new.gps_lat OR old.gps_lon IS NOT new.gps_lon
    OR old.content_hash IS NOT new.content_hash OR old.place_city IS NOT new.place_city
    OR old.place_region IS NOT new.place_region OR old.place_country IS NOT new.place_country
    OR old.place_cc IS NOT new.place_cc
BEGIN
    INSERT INTO search_dirty (file_id, gen) VALUES (new.id, 1)
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_files_delete AFTER DELETE ON files BEGIN
    INSERT INTO search_dirty (file_id, gen) VALUES (old.id, 1)
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_tag_insert AFTER INSERT ON content_tags BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE content_hash = new.content_hash
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_tag_delete AFTER DELETE ON content_tags BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE content_hash = old.content_hash
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_tag_update AFTER UPDATE ON content_tags BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files
        WHERE content_hash IN (old.content_hash, new.content_hash)
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_tag_rename AFTER UPDATE OF name ON tags WHEN old.name IS NOT new.name BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT f.id, 1 FROM content_tags ct
        JOIN files f ON f.content_hash = ct.content_hash WHERE ct.tag_id = new.id
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_face_insert AFTER INSERT ON faces WHEN new.person_id IS NOT NULL BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE content_hash = new.content_hash
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_face_update AFTER UPDATE ON faces
WHEN old.person_id IS NOT new.person_id OR old.content_hash IS NOT new.content_hash BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files
        WHERE content_hash IN (old.content_hash, new.content_hash)
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_face_delete AFTER DELETE ON faces WHEN old.person_id IS NOT NULL BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE content_hash = old.content_hash
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_person_rename AFTER UPDATE ON persons WHEN old.name IS NOT new.name BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT f.id, 1 FROM faces fc
        JOIN files f ON f.content_hash = fc.content_hash WHERE fc.person_id = new.id
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_person_delete BEFORE DELETE ON persons BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT f.id, 1 FROM faces fc
        JOIN files f ON f.content_hash = fc.content_hash WHERE fc.person_id = old.id
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_insight_insert AFTER INSERT ON insights BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE content_hash = new.content_hash
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_insight_update AFTER UPDATE ON insights
WHEN old.title IS NOT new.title OR old.content_hash IS NOT new.content_hash BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files
        WHERE content_hash IN (old.content_hash, new.content_hash)
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
CREATE TRIGGER search_insight_delete AFTER DELETE ON insights BEGIN
    INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE content_hash = old.content_hash
        ON CONFLICT (file_id) DO UPDATE SET gen = gen + 1;
END;
INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files;
"""
MIGRATIONS.append(Migration(20, "search", SEARCH))
# 24: the place tree of one library (GET /places?library=, core/place_tree.py) from an index alone:
# files_by_place serves every library, but filtering it on library_id reads each row (6 s at
# 1,000,000 files; bench_places). id last, so PostgreSQL answers MAX(id) from the index too.
PLACES_BY_LIBRARY = """
CREATE INDEX files_by_library_place ON files(library_id, place_cc, place_region, place_city, id)
    WHERE place_cc IS NOT NULL;
"""
MIGRATIONS.append(Migration(24, "places_by_library", PLACES_BY_LIBRARY))

# 21: perceptual hashes (core/phash.py), keyed on content like faces and tags: the 64-bit DCT hash
# near-duplicates are found by and the 256-bit one that tells copies from burst frames, as hex,
# and both of the picture's centre (_inner: what a 5% crop keeps); NULL with the reason in `error`
# when the thumbnail could not be read. A content with no row
# and a thumbnail made is due (repositories/duplicates.py).
PERCEPTUAL_HASHES = """
CREATE TABLE perceptual_hashes (
    content_hash TEXT PRIMARY KEY,
    phash        TEXT,
    fine         TEXT,
    phash_inner  TEXT,
    fine_inner   TEXT,
    error        TEXT,
    computed_at  TEXT NOT NULL
);
"""
MIGRATIONS.append(Migration(21, "perceptual_hashes", PERCEPTUAL_HASHES))


# 22: the map's in-memory index (core/mapindex.py) is reloaded per library when this number moves:
# the scan bumps it in the transaction that writes or deletes rows with GPS (repositories/mapindex.py).
MAP_GENERATION = """
ALTER TABLE libraries ADD COLUMN map_generation INTEGER NOT NULL DEFAULT 0;
"""
MIGRATIONS.append(Migration(22, "map_generation", MAP_GENERATION))
