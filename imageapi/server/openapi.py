"""GET /openapi.json: the OpenAPI 3 document of the server. The schemathesis test holds the server
to it (no 5xx, every response matching its schema)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imageapi import __version__
from imageapi.core.duplicates import MAX_LIMIT as DUP_MAX
from imageapi.core.listing import DEFAULT_SORT, MAX_LIMIT, SORTS
from imageapi.core.memories import SPANS
from imageapi.core.timeline import MAX_ITEMS as TIMELINE_MAX
from imageapi.server import routes_places

J = dict[str, Any]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: J) -> J:
    return {"anyOf": [schema, {"type": "null"}]}


STR: J = {"type": "string"}
# What a client path may hold at all (the full traversal rules are checked by the server).
# Any file name is a path (docs/api.md, "File names"): only NUL cannot be part of one.
PATH_STR: J = {"type": "string", "minLength": 1, "maxLength": 4095, "pattern": "^[^\\x00]+$"}
TAG_STR: J = {"type": "string", "minLength": 1, "maxLength": 100,
              "pattern": "^[^\\x00-\\x1f\\x7f]*\\S[^\\x00-\\x1f\\x7f]*$"}
INT: J = {"type": "integer"}
NUM: J = {"type": "number"}
BOOL: J = {"type": "boolean"}
UNIT: J = {"type": "number", "minimum": 0, "maximum": 1}
SIZE: J = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}


def _obj(props: J, required: list[str] | None = None) -> J:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


def _json(schema: J, description: str = "OK") -> J:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> J:
    text = {400: "bad request", 401: "missing or invalid token", 404: "not found", 409: "conflict",
            413: "body too large", 415: "unsupported media", 422: "the file cannot be read",
            429: "too many failed logins", 502: "an external tool failed"}
    return {str(s): _json(_ref("Error"), text.get(s, "error")) for s in statuses}


def _q(name: str, schema: J, description: str, required: bool = False) -> J:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


LIBRARY = _q("library", STR, "library name; default: `main`, or the only library")
PATH = _q("path", PATH_STR, "file path relative to the library root, as the listing gives it", True)
JSON_BODY_ERRORS = (400, 401, 404, 413, 415)


def _body(schema: J) -> J:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


BEARER: list[J] = [{"bearer": []}, {"session": []}]
MEDIA: list[J] = [{"bearer": []}, {"session": []}, {"mediaToken": []}]

# An item's duplicates stack (?stack=true): the group, its size among the files listed from, and
# whether this item is the one to show on top (the best to keep); null when it has no duplicates.
STACK: J = _nullable(_obj({"group": STR, "count": INT, "top": BOOL}))
FILE_RECORD = {
    "type": "object",
    "required": ["id", "library", "path", "name", "kind", "size", "mtime", "thumbnail"],
    "properties": {
        "id": INT, "library": STR, "path": STR, "name": STR,
        "kind": {"type": "string", "enum": ["image", "heic", "raw", "video", "other"]},
        "size": INT, "mtime": STR, "content_hash": _nullable(STR), "taken_at": _nullable(STR),
        "taken_at_source": _nullable(STR), "taken_at_offset_source": _nullable(STR),
        "place": _nullable(_obj({"city": _nullable(STR), "region": _nullable(STR), "country": _nullable(STR),
                                 "cc": STR})),
        "make": _nullable(STR), "model": _nullable(STR),
        "lens": _nullable(STR), "orientation": _nullable(INT), "width": _nullable(INT),
        "height": _nullable(INT), "gps_lat": _nullable(NUM), "gps_lon": _nullable(NUM),
        "gps_alt": _nullable(NUM), "exposure_time": _nullable(NUM), "f_number": _nullable(NUM),
        "iso": _nullable(INT), "focal_length": _nullable(NUM), "duration": _nullable(NUM),
        "rotation": _nullable(INT), "video_codec": _nullable(STR), "audio_codec": _nullable(STR),
        "error": _nullable(STR),
        "thumbnail": _obj({"state": STR, "reason": _nullable(STR)}),
        "first_seen": STR, "last_seen": STR,
        "tags": {"type": "array", "items": STR},
        "stack": STACK,
    },
}

FACE = _obj({
    "id": INT,
    "box": _obj({"x": NUM, "y": NUM, "w": NUM, "h": NUM}),
    "score": NUM, "model": STR,
    "person": _nullable(_obj({"id": INT, "name": _nullable(STR)})),
    "bound_by": _nullable(STR),
})

TAG_CHANGE = {
    "type": "object",
    "description": "give `path` or `paths`, and `tag` or `tags`",
    "properties": {
        "library": STR, "path": PATH_STR,
        "paths": {"type": "array", "items": PATH_STR, "minItems": 1, "maxItems": 1000},
        "tag": TAG_STR, "tags": {"type": "array", "items": TAG_STR, "minItems": 1},
    },
}

TAG_RESULT = _obj({"library": STR, "changed": INT,
                   "files": {"type": "array", "items": _obj({"path": STR, "tags": {"type": "array", "items": STR}})}})

IMAGE_BYTES = {
    "description": "the picture",
    "headers": {"ETag": {"schema": STR}, "Last-Modified": {"schema": STR}, "Cache-Control": {"schema": STR}},
    "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
}


# --- AI insights (imageapi/server/routes_insights.py, docs/insights.md)
TOOL_RECORD: J = {"type": "object", "required": ["name", "arguments", "result"],
                  "properties": {"name": STR, "arguments": {"type": "object"}, "result": {}, "error": STR}}
INSIGHT: J = {
    "type": "object",
    "required": ["id", "content_hash", "thread_id", "amended_from", "title", "text", "tools", "backend", "server",
                 "model", "failovers", "timings", "created_at"],
    "properties": {
        "id": INT, "content_hash": STR, "thread_id": INT, "amended_from": _nullable(INT), "title": STR, "text": STR,
        "tools": {"type": "array", "items": TOOL_RECORD},
        "backend": {"type": "string", "enum": ["local", "hybrid"]}, "server": STR, "model": STR,
        "failovers": {"type": "array", "items": _obj({"url": STR, "model": STR, "reason": STR})},
        "timings": {"type": "object"}, "created_at": STR,
        "library": STR, "path": STR,
    },
}
CHAT_MESSAGE: J = {
    "type": "object", "required": ["index", "role", "content", "created_at"],
    "properties": {"index": INT, "role": {"type": "string", "enum": ["user", "assistant"]}, "content": STR,
                   "created_at": STR, "tools": {"type": "array", "items": TOOL_RECORD},
                   "backend": _nullable(STR), "model": _nullable(STR)},
}
TRANSCRIPT: J = _obj({"library": STR, "path": STR, "insight_id": INT, "thread_id": INT,
                      "messages": {"type": "array", "items": _ref("ChatMessage")}})
BACKEND_FIELDS: J = {"backend": _nullable({"type": "string", "enum": ["local", "hybrid"]}),
                     "model": _nullable(STR)}
CHAT_BODY: J = {"type": "object", "required": ["path", "message"], "properties": {
    "library": STR, "path": PATH_STR, "message": STR, **BACKEND_FIELDS,
    "max_iterations": _nullable({"type": "integer", "minimum": 0}), "amend": _nullable(BOOL)}}
CHAT_RESULT: J = {"type": "object", "required": ["library", "path", "amended"], "properties": {
    "library": STR, "path": STR, "amended": BOOL, "insight_id": INT, "thread_id": INT,
    "message": _ref("ChatMessage"), "insight": _ref("Insight"),
    "failovers": {"type": "array"}, "timings": {"type": "object"}}}
MODEL_ERRORS = (400, 401, 404, 413, 415, 422, 502, 503)
INSIGHT_PATHS: J = {
    "/insights/generate": {"post": {
        "summary": "write a new insight about a photo (the model calls tools to gather facts); starts a new "
                   "conversation", "security": BEARER,
        "requestBody": _body({"type": "object", "required": ["path"],
                              "properties": {"library": STR, "path": PATH_STR, **BACKEND_FIELDS}}),
        "responses": {"200": _json(_ref("Insight")), **_errors(*MODEL_ERRORS)}}},
    "/insights": {"get": {
        "summary": "the insights of a photo (they follow its content), newest first", "security": BEARER,
        "parameters": [LIBRARY, PATH],
        "responses": {"200": _json(_obj({"library": STR, "path": STR,
                                         "insights": {"type": "array", "items": _ref("Insight")}})),
                      **_errors(400, 401, 404)}}},
    "/insights/openrouter/models": {"get": {
        "summary": "the OpenRouter models a client may pick for backend 'hybrid' (empty: no picker)",
        "security": BEARER,
        "responses": {"200": _json(_obj({"enabled": BOOL, "default": _nullable(STR),
                                         "models": {"type": "array", "items": STR}})), **_errors(401)}}},
    "/insights/chat": {"post": {
        "summary": "one chat turn about the photo's latest insight (amend: a rewritten insight instead)",
        "security": BEARER, "requestBody": _body(CHAT_BODY),
        "responses": {"200": _json(CHAT_RESULT), **_errors(*MODEL_ERRORS, 409)}}},
    "/insights/chat/stream": {"post": {
        "summary": "one chat turn as Server-Sent Events: delta, tool_call, tool_result, then done (the stored "
                   "message) or error; disconnecting cancels the model call", "security": BEARER,
        "requestBody": _body(CHAT_BODY),
        "responses": {"200": {"description": "the event stream",
                              "content": {"text/event-stream": {"schema": STR}}},
                      **_errors(*MODEL_ERRORS, 409)}}},
    "/insights/chat/history": {"get": {
        "summary": "the conversation of the photo's latest insight, as shown to a user", "security": BEARER,
        "parameters": [LIBRARY, PATH],
        "responses": {"200": _json(TRANSCRIPT), **_errors(400, 401, 404)}}},
    "/insights/chat/rewind": {"post": {
        "summary": "drop the message at a rendered index, its tool calls and everything after it (index 0, "
                   "the initial message, stays)", "security": BEARER,
        "requestBody": _body(_obj({"library": STR, "path": PATH_STR, "index": {"type": "integer", "minimum": 1}},
                                  ["path", "index"])),
        "responses": {"200": _json(TRANSCRIPT), **_errors(*JSON_BODY_ERRORS, 409)}}},
}


# --- People: rename, merge, a face crop (imageapi/server/routes_people.py)
PERSON_ID: J = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
PERSON_OR_NULL: J = _nullable(_obj({"id": INT, "name": _nullable(STR), "named": BOOL}))
JPEG: J = {"type": "string", "format": "binary"}
PEOPLE_PATHS: J = {
    "/persons/{id}": {
        "parameters": [PERSON_ID],
        "patch": {"summary": "name an unnamed person, or rename one (a name another person has: 409, merge instead)",
                  "security": BEARER,
                  "requestBody": _body(_obj({"name": STR})),
                  "responses": {"200": _json(_obj({"enabled": BOOL, "person": PERSON_OR_NULL})),
                                **_errors(*JSON_BODY_ERRORS, 409)}},
    },
    "/persons/{id}/faces": {
        "parameters": [PERSON_ID],
        "get": {"summary": "a page of the person's faces, by id", "security": BEARER,
                "parameters": [_q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (100)"),
                               _q("cursor", STR, "next_cursor of the previous page")],
                "responses": {"200": _json({"type": "object", "required": ["enabled", "faces", "next_cursor"],
                                            "properties": {
                    "enabled": BOOL, "next_cursor": _nullable(STR),
                    "faces": {"type": "array", "items": _obj({
                        "id": INT, "library": _nullable(STR), "path": _nullable(STR),
                        "box": _obj({"x": NUM, "y": NUM, "w": NUM, "h": NUM}), "score": NUM,
                        "bound_by": _nullable(STR)})}}}),
                              **_errors(400, 401, 404)}},
    },
    "/faces/{id}/crop": {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}],
        "get": {"summary": "one face, cut from a stored thumbnail (a small square JPEG)", "security": BEARER,
                "responses": {"200": {"description": "the face", "content": {"image/jpeg": {"schema": JPEG}}},
                              **_errors(401, 404, 422)}},
    },
    "/persons/{id}/merge": {
        "parameters": [PERSON_ID],
        "post": {"summary": "merge this person into another (`into`, an id): the faces move, this person goes",
                 "security": BEARER,
                 "requestBody": _body(_obj({"into": {"type": "integer", "minimum": 1}})),
                 "responses": {"200": _json(_obj({"enabled": BOOL, "person": PERSON_OR_NULL,
                                                  "moved": INT, "unbound": INT})),
                               **_errors(*JSON_BODY_ERRORS)}},
    },
    "/persons/{id}/face": {
        "parameters": [PERSON_ID],
        "get": {"summary": "the person's best face, cut from a stored thumbnail (a small square JPEG)",
                "security": BEARER,
                "responses": {"200": {"description": "the face",
                                      "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                              **_errors(401, 404, 422)}},
    },
}


# --- The web client's timeline (imageapi/server/routes_timeline.py, core/timeline.py)
ALL_LIBRARIES = _q("library", STR, "one library (default: every library)")
COLLAPSE = _q("collapse", BOOL, "one file per duplicates stack, its top: the other copies are neither counted nor "
                                "listed (default false; implies `stack` on items)")
MAP_PHOTO = _obj({"id": INT, "library": STR, "path": STR, "name": STR, "kind": STR, "taken_at": _nullable(STR),
                  "lat": NUM, "lon": NUM})
TIMELINE_PATHS: J = {
    "/timeline/buckets": {"get": {
        "summary": "the number of files per month and per day, newest first (files without a date last, "
                   "as month `undated`): the timeline's layout and date scrubber",
        "security": BEARER, "parameters": [ALL_LIBRARIES, COLLAPSE],
        "responses": {"200": _json(_obj({
            "libraries": {"type": "array", "items": STR},
            "months": {"type": "array", "items": _obj({
                "month": STR, "count": INT, "days": {"type": "array", "items": _obj({"day": STR, "count": INT})}})},
        })), **_errors(400, 401, 404)}}},
    "/timeline/items": {"get": {
        "summary": "the files of one month of the timeline, newest first",
        "security": BEARER,
        "parameters": [ALL_LIBRARIES,
                       _q("month", {"type": "string", "pattern": "^([0-9]{4}-(0[1-9]|1[0-2])|undated)$"},
                          "YYYY-MM or `undated`", True),
                       _q("offset", {"type": "integer", "minimum": 0, "maximum": 2**31}, "files to skip"),
                       _q("limit", {"type": "integer", "minimum": 1, "maximum": TIMELINE_MAX},
                          f"at most this many (default {TIMELINE_MAX})"),
                       _q("stack", BOOL, "give each item its duplicates `stack` (default false)"), COLLAPSE],
        "responses": {"200": _json(_obj({"month": STR, "offset": INT, "items": {"type": "array", "items": _obj({
            "library": STR, "path": STR, "name": STR,
            "kind": {"type": "string", "enum": ["image", "heic", "raw", "video", "other"]},
            "taken_at": _nullable(STR), "width": _nullable(INT), "height": _nullable(INT),
            "orientation": _nullable(INT), "rotation": _nullable(INT), "duration": _nullable(NUM),
            "stack": STACK}, required=["library", "path", "name", "kind", "taken_at", "width", "height",
                                       "orientation", "rotation", "duration"])}})),
            **_errors(400, 401, 404)}}},
}

# --- Duplicates (imageapi/server/routes_duplicates.py, core/duplicates.py)
DUP_MEMBER = _obj({"id": INT, "library": STR, "path": STR, "kind": STR, "size": INT, "width": _nullable(INT),
                   "height": _nullable(INT), "content_hash": STR, "taken_at": _nullable(STR),
                   "camera": _nullable(STR), "gps": BOOL, "keep": BOOL})
DUPLICATES_PATHS: J = {
    "/duplicates": {"get": {
        "summary": "groups of duplicates (one content at several paths) or near-duplicates (copies of one "
                   "picture), each member with the one to keep marked; nothing is ever deleted",
        "security": BEARER,
        "parameters": [_q("near", BOOL, "near-duplicates (default false: exact)"),
                       _q("similar", BOOL, "pictures of one moment that are not copies: bursts (default false)"),
                       _q("library", STR, "only groups with a file in this library"),
                       _q("limit", {"type": "integer", "minimum": 1, "maximum": DUP_MAX}, "groups (default 50)"),
                       _q("cursor", STR, "next_cursor of the previous page")],
        "responses": {"200": _json(_obj({
            "kind": {"type": "string", "enum": ["exact", "near", "similar"]}, "library": _nullable(STR),
            "next_cursor": _nullable(STR),
            "groups": {"type": "array", "items": _obj({
                "kind": {"type": "string", "enum": ["exact", "near", "similar"]}, "key": STR, "count": INT,
                "keep_reason": STR, "members": {"type": "array", "items": DUP_MEMBER}})}})),
            **_errors(400, 401, 404)}}},
}


def _spec() -> J:
    paths: J = {
        "/health": {"get": {"summary": "liveness", "security": [], "responses": {
            "200": _json(_obj({"status": STR, "version": STR}))}}},
        "/openapi.json": {"get": {"summary": "this document", "security": [], "responses": {
            "200": _json({"type": "object"})}}},
        "/login": {"post": {
            "summary": "a JWT for a user name and password; with `session: true`, a browser session "
                       "cookie (HttpOnly, SameSite=Strict) instead of the token",
            "security": [],
            "requestBody": _body(_obj({"username": STR, "password": STR, "session": BOOL}, ["username", "password"])),
            "responses": {"200": _json(_obj({"token": STR, "expires_at": STR, "user": STR, "session": BOOL},
                                            ["expires_at", "user"])),
                          **_errors(400, 401, 413, 415, 429)}}},
        "/logout": {"post": {
            "summary": "end the browser session of the request's cookie (revoked on the server) and clear "
                       "the cookie; `ended` is false when there was none (a Bearer token is not revoked)",
            "security": BEARER,
            "responses": {"200": _json(_obj({"ended": BOOL})), **_errors(401, 403)}}},
        **TIMELINE_PATHS,
        **DUPLICATES_PATHS,
        "/media-token": {"post": {
            "summary": "a short-lived media token for <img>/<video> URLs (query parameter `mt`), "
                       "valid for one library and one path prefix",
            "security": BEARER,
            "requestBody": _body({"type": "object", "properties": {
                "library": STR, "path": {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f\\\\]*$"},
                "ttl": {"type": "integer", "minimum": 1, "maximum": 21600}}}),
            "responses": {"200": _json(_obj({"token": STR, "expires_at": STR, "library": STR, "path": STR,
                                             "query": STR})),
                          **_errors(*JSON_BODY_ERRORS)}}},
        "/libraries": {"get": {"summary": "the libraries", "security": BEARER, "responses": {
            "200": _json(_obj({"libraries": {"type": "array", "items": _obj({"name": STR, "files": INT})}})),
            **_errors(401)}}},
        "/photos": {"get": {
            "summary": "files of a folder (or subtree) with their metadata, and its sub-folders with counts",
            "security": BEARER,
            "parameters": [
                LIBRARY,
                _q("path", {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f\\\\]*$"},
                   "folder relative to the library root (default: the root)"),
                _q("recursive", BOOL, "the whole subtree (default false; true with tag or person)"),
                _q("sort", {"type": "string", "enum": list(SORTS)}, f"order (default {DEFAULT_SORT})"),
                _q("tag", STR, "only files with this tag"),
                _q("person", {"type": "integer", "minimum": 1}, "only photos of this person"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size (default 200)"),
                _q("cursor", STR, "next_cursor of the previous page"),
                _q("stack", BOOL, "give each item its duplicates `stack` (default false)"),
            ],
            "responses": {"200": _json({
                "type": "object",
                "required": ["library", "path", "recursive", "sort", "folders", "items", "next_cursor"],
                "properties": {
                    "library": STR, "path": STR, "recursive": BOOL, "sort": STR, "tag": _nullable(STR),
                    "person": _nullable(INT), "limit": INT,
                    "folders": {"type": "array", "items": _obj({"name": STR, "path": STR, "count": INT})},
                    "items": {"type": "array", "items": _ref("File")},
                    "next_cursor": _nullable(STR),
                }}),
                **_errors(400, 401, 404)}}},
        "/search": {"get": {
            "summary": "files found by words (place, camera, lens, file and folder names, tags, people, "
                       "insight titles; prefixes, case and accents folded) and filters",
            "security": BEARER,
            "parameters": [
                _q("q", STR, "words (at most 500 characters); empty with a filter lists by the filters"),
                _q("from", STR, "taken on or after: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"),
                _q("to", STR, "taken on or before (a bare date: the whole day)"),
                _q("kind", STR, "photo, video, raw or other; several (repeated or commas): any of them"),
                _q("library", STR, "a library's name; several: any of them"),
                _q("person", STR, "a person's id or name; repeated: all of them in the photo"),
                _q("tag", STR, "a tag; repeated: all of them"),
                _q("camera", STR, "words of the camera's make and model"),
                _q("gps", BOOL, "only files with (true) or without (false) GPS"),
                _q("bbox", STR, "south,west,north,east in degrees; west > east crosses the antimeridian"),
                _q("sort", {"type": "string", "enum": ["newest", "oldest", "relevance"]}, "default newest"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
                _q("cursor", STR, "next_cursor of the previous page"),
            ],
            "responses": {"200": _json(_obj({
                "q": STR, "sort": STR, "limit": INT, "items": {"type": "array", "items": _ref("File")},
                "next_cursor": _nullable(STR)})),
                **_errors(400, 401)}}},
        "/image": {"get": {
            "summary": "thumb: the stored thumbnail (made if missing); preview: a large JPEG; "
                       "full: the original bytes (Range supported)",
            "security": MEDIA,
            "parameters": [LIBRARY, PATH, _q("size", {"type": "string", "enum": ["thumb", "preview", "full"]},
                                             "default thumb"),
                           _q("mt", STR, "media token (instead of the Authorization header)")],
            "responses": {"200": IMAGE_BYTES, "206": {"description": "a byte range of the original"},
                          "304": {"description": "not modified"},
                          "416": {"description": "range not satisfiable"},
                          **_errors(400, 401, 404, 415, 422, 502)}}},
        "/image/metadata": {"get": {
            "summary": "the stored EXIF and file facts", "security": BEARER,
            "parameters": [LIBRARY, PATH],
            "responses": {"200": _json(_ref("File")), **_errors(400, 401, 404)}}},
        "/video": {"get": {
            "summary": "the original video, with Range support", "security": MEDIA,
            "parameters": [LIBRARY, PATH, _q("mt", STR, "media token")],
            "responses": {"200": {"description": "the video",
                                  "content": {"video/*": {"schema": {"type": "string", "format": "binary"}}}},
                          "206": {"description": "a byte range"}, "304": {"description": "not modified"},
                          "416": {"description": "range not satisfiable"},
                          **_errors(400, 401, 404, 422)}}},
        "/tags": {"get": {"summary": "every tag with its file count", "security": BEARER, "responses": {
            "200": _json(_obj({"tags": {"type": "array", "items": _obj({"name": STR, "count": INT})}})),
            **_errors(401)}}},
        "/image/tags": {
            "get": {"summary": "the tags of a file", "security": BEARER, "parameters": [LIBRARY, PATH],
                    "responses": {"200": _json(_obj({"library": STR, "path": STR,
                                                     "tags": {"type": "array", "items": STR}})),
                                  **_errors(400, 401, 404)}},
            "post": {"summary": "tag one or many files (tags follow content)", "security": BEARER,
                     "requestBody": _body(TAG_CHANGE),
                     "responses": {"200": _json(TAG_RESULT), **_errors(*JSON_BODY_ERRORS, 422)}},
            "delete": {"summary": "untag one or many files", "security": BEARER, "requestBody": _body(TAG_CHANGE),
                       "responses": {"200": _json(TAG_RESULT), **_errors(*JSON_BODY_ERRORS, 422)}},
        },
        "/memories": {"get": {
            "summary": "photos and videos taken on this day/week/month in earlier years, newest year first",
            "security": BEARER,
            "parameters": [
                _q("span", {"type": "string", "enum": list(SPANS)}, "default day"),
                _q("date", {"type": "string", "format": "date"}, "YYYY-MM-DD (default: today in tz)"),
                _q("tz", STR, "Area/City time zone deciding what today is"),
                _q("library", STR, "only this library (default: all)"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "files in all (default 500)"),
            ],
            "responses": {"200": _json(_obj({
                "span": STR, "date": STR,
                "years": {"type": "array", "items": _obj({
                    "year": INT, "count": INT, "items": {"type": "array", "items": _ref("File")}})},
            })), **_errors(400, 401, 404)}}},
        "/map": {"get": {
            "summary": "clusters of the photos with GPS in a box, and single photos when zoomed in",
            "description": "Cells are Web Mercator tiles of level zoom + 2 (coarser when the box would "
                           "hold more than 1,024). A cell holding one photo (or, from zoom 16, up to 16) "
                           "is given as photos. west > east: the box crosses the antimeridian.",
            "security": BEARER,
            "parameters": [
                _q("bbox", STR, "south,west,north,east in degrees", True),
                _q("zoom", {"type": "integer", "minimum": 0, "maximum": 22}, "the map's zoom level", True),
                ALL_LIBRARIES,
            ],
            "responses": {"200": _json(_obj({
                "bbox": {"type": "array", "items": NUM}, "zoom": INT, "library": _nullable(STR),
                "level": INT, "total": INT,
                "clusters": {"type": "array", "items": _obj({
                    "count": INT, "lat": NUM, "lon": NUM, "bounds": {"type": "array", "items": NUM},
                    "cover": _nullable(MAP_PHOTO)})},
                "photos": {"type": "array", "items": MAP_PHOTO},
                "tiles": _obj({"url": _nullable(STR), "attribution": STR}),
            })), **_errors(400, 401, 404)}}},
        "/faces": {
            "get": {"summary": "the faces in a photo", "security": BEARER, "parameters": [LIBRARY, PATH],
                    "responses": {"200": _json({"type": "object", "required": ["enabled", "faces"], "properties": {
                        "enabled": BOOL, "library": STR, "path": STR, "scanned": BOOL,
                        "faces": {"type": "array", "items": _ref("Face")}}}),
                        **_errors(400, 401, 404)}},
            "post": {"summary": "a face box drawn by hand (0..1, relative to the upright picture)",
                     "security": BEARER,
                     "requestBody": _body({"type": "object", "required": ["path", "box"], "properties": {
                         "library": STR, "path": PATH_STR, "person": STR,
                         "box": _obj({"x": UNIT, "y": UNIT, "w": SIZE, "h": SIZE})}}),
                     "responses": {"200": _json(_obj({"enabled": BOOL, "face": {"type": "null"}}), "faces disabled"),
                                   "201": _json(_obj({"enabled": BOOL, "face": _ref("Face")})),
                                   **_errors(*JSON_BODY_ERRORS)}},
        },
        "/faces/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}],
            "patch": {"summary": "bind a face to a person by name (`person`) or id (`person_id`), or unbind it "
                                 "(null: remembered as not this person)", "security": BEARER,
                      "requestBody": _body({"type": "object", "properties": {
                          "person": _nullable(STR), "person_id": _nullable({"type": "integer", "minimum": 1})}}),
                      "responses": {"200": _json(_obj({"enabled": BOOL, "face": _nullable(_ref("Face"))})),
                                    **_errors(*JSON_BODY_ERRORS)}},
            "delete": {"summary": "delete a face", "security": BEARER,
                       "responses": {"200": _json(_obj({"enabled": BOOL, "deleted": _nullable(INT)})),
                                     **_errors(400, 401, 404)}},
        },
        "/persons": {
            "get": {"summary": "people with their face and photo counts: named by name, then unnamed clusters, "
                               "largest first", "security": BEARER,
                    "parameters": [_q("named", BOOL, "only named (true) or only unnamed (false) persons")],
                    "responses": {
                "200": _json(_obj({"enabled": BOOL, "persons": {"type": "array", "items": _obj(
                    {"id": INT, "name": _nullable(STR), "named": BOOL, "faces": INT, "photos": INT,
                     "cover_face_id": _nullable(INT)})}})), **_errors(400, 401)}},
            "post": {"summary": "create a person", "security": BEARER,
                     "requestBody": _body(_obj({"name": STR})),
                     "responses": {"200": _json(_obj({"enabled": BOOL, "person": {"type": "null"}}), "faces disabled"),
                                   "201": _json(_obj({"enabled": BOOL, "person": _obj({"id": INT, "name": STR})})),
                                   **_errors(*JSON_BODY_ERRORS)}},
        },
        **PEOPLE_PATHS,
        "/persons/{id}/photos": {"get": {
            "summary": "photos in which a person's face is bound", "security": BEARER,
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
                LIBRARY,
                _q("sort", {"type": "string", "enum": list(SORTS)}, f"order (default {DEFAULT_SORT})"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size"),
                _q("cursor", STR, "next_cursor of the previous page"),
            ],
            "responses": {"200": _json({
                "type": "object", "required": ["enabled", "items", "next_cursor"],
                "properties": {"enabled": BOOL, "person": _nullable(_obj({"id": INT, "name": _nullable(STR)})),
                               "library": STR, "items": {"type": "array", "items": _ref("File")},
                               "next_cursor": _nullable(STR)}}),
                          **_errors(400, 401, 404)}}},
        "/status": {"get": {"summary": "the watcher's last ticks, backlog sizes and errors", "security": BEARER,
                            "responses": {"200": _json(_obj({
                                "watcher": {"type": "object"}, "last_scans": {"type": "array"},
                                "backlog": _obj({"files": INT, "unhashed": INT, "thumbnails_pending": INT,
                                                 "file_errors": INT, "perceptual_hashes_pending": INT,
                                                 "places_pending": INT, "search_pending": INT}),
                                "faces": {"type": "object", "required": ["enabled"]}})),
                                **_errors(401)}}},
    }
    paths.update(INSIGHT_PATHS)
    paths.update(VIDEO_PATHS)
    paths.update(routes_places.openapi_paths(BEARER))
    return {
        "openapi": "3.1.0",
        "info": {"title": "imageapi", "version": __version__,
                 "description": "Errors are always {\"error\": {\"code\", \"message\"}}."},
        "security": BEARER,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "mediaToken": {"type": "apiKey", "in": "query", "name": "mt"},
                "session": {"type": "apiKey", "in": "cookie", "name": "imageapi_session"},
            },
            "schemas": {
                "Error": _obj({"error": _obj({"code": STR, "message": STR})}),
                "File": FILE_RECORD,
                "Face": FACE,
                "Insight": INSIGHT,
                "ChatMessage": CHAT_MESSAGE,
            },
        },
    }


# --- Video: HLS, the wall's previews (imageapi/server/routes_video.py, docs/video.md)
MT = _q("mt", STR, "media token (instead of the Authorization header)")
RANGED: J = {"206": {"description": "a byte range"}, "304": {"description": "not modified"},
             "416": {"description": "range not satisfiable"}}


def _bytes(media_type: str, description: str) -> J:
    return {"description": description, "headers": {"ETag": {"schema": STR}, "Cache-Control": {"schema": STR}},
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}


WALL_ITEM: J = _obj({
    "path": STR, "name": STR, "size": INT, "duration": _nullable(NUM), "taken_at": _nullable(STR),
    "width": _nullable(INT), "height": _nullable(INT), "rotation": _nullable(INT),
    "video_codec": _nullable(STR), "audio_codec": _nullable(STR),
    "preview": _obj({"state": {"type": "string", "enum": ["done", "pending", "failed"]}, "error": _nullable(STR)}),
    "urls": _obj({"clip": _nullable(STR), "gif": _nullable(STR), "thumbnail": STR, "stream": STR, "original": STR}),
})
VIDEO_PATHS: J = {
    "/video/stream": {"get": {
        "summary": "the video as an HLS playlist (fMP4 segments; H.264 copied, or HEVC for clients that say "
                   "they play it, else transcoded to H.264/AAC). While the first run is going the playlist "
                   "grows (an EVENT playlist without #EXT-X-ENDLIST); segment URLs carry a media token",
        "security": MEDIA,
        "parameters": [LIBRARY, PATH, _q("hevc", BOOL, "the client plays HEVC (default false)"), MT],
        "responses": {"200": {"description": "the playlist", "headers": {"Cache-Control": {"schema": STR}},
                              "content": {"application/vnd.apple.mpegurl": {"schema": STR}}},
                      "503": {**_json(_ref("Error"), "the first segment is not ready yet: ask again"),
                              "headers": {"Retry-After": {"schema": STR}}},
                      **_errors(400, 401, 404, 415, 422, 502)}}},
    "/video/segment/{name}": {"get": {
        "summary": "a file of a stream (the URLs in the playlist; only segments listed as complete)",
        "security": MEDIA,
        "parameters": [{"name": "name", "in": "path", "required": True, "description": "file name",
                        "schema": {"type": "string", "pattern": "^(init\\.mp4|seg[0-9]{5,9}\\.m4s)$"}},
                       LIBRARY, PATH, _q("v", {"type": "string", "enum": ["copy", "h264"]}, "variant", True),
                       _q("k", STR, "source version", True), MT],
        "responses": {"200": {"description": "the segment",
                              "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}},
                                          "video/iso.segment": {"schema": {"type": "string", "format": "binary"}}}},
                      **RANGED, **_errors(400, 401, 404)}}},
    "/video/preview": {"get": {
        "summary": "the video's preview clip (a few silent seconds, 320 wide, H.264, faststart); 404 "
                   "preview_pending until it is made, 422 preview_failed when it cannot be",
        "security": MEDIA, "parameters": [LIBRARY, PATH, MT],
        "responses": {"200": _bytes("video/mp4", "the clip"), **RANGED, **_errors(400, 401, 404, 422)}}},
    "/video/gif": {"get": {
        "summary": "the video's animated GIF preview (240 wide), made with the clip",
        "security": MEDIA, "parameters": [LIBRARY, PATH, MT],
        "responses": {"200": _bytes("image/gif", "the GIF"), **RANGED, **_errors(400, 401, 404, 422)}}},
    "/video/wall": {"get": {
        "summary": "videos of a folder (its subtree by default), newest first, with the URLs of their "
                   "clip, GIF, thumbnail and stream (carrying a media token for the folder)",
        "security": BEARER,
        "parameters": [
            LIBRARY,
            _q("path", {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f\\\\]*$"},
               "folder relative to the library root (default: the root)"),
            _q("recursive", BOOL, "the whole subtree (default true)"),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
            _q("cursor", STR, "next_cursor of the previous page"),
        ],
        "responses": {"200": _json(_obj({"library": STR, "path": STR, "recursive": BOOL, "limit": INT,
                                         "items": {"type": "array", "items": WALL_ITEM},
                                         "next_cursor": _nullable(STR)})),
                      **_errors(400, 401, 404)}}},
}


SPEC = _spec()


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)


def setup(app: web.Application) -> None:
    app.router.add_get("/openapi.json", get_openapi)
