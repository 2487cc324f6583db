"""Numbered schema migrations. Append only: never edit a migration that has shipped.

Numbers taken: 1 core store (libraries, files, dirs, scans, tags).
Reserved: 2 faces backlog and people, 3 users and auth, 4 video caches, 5 insights.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


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
