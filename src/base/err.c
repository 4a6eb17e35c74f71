#include "base/err.h"

#include <stddef.h>

/* One row per code, in the order of enum err from ERR_OK down. The general
 * codes that a client cannot act on share the wire code "internal". */
static const err_info table[] = {
    {ERR_OK,          "ok",          200, "ok",          "ok"},
    {ERR_AGAIN,       "again",       503, "busy",        "server busy: retry later"},
    {ERR_INVALID,     "invalid",     400, "bad_request", "invalid request"},
    {ERR_PROTOCOL,    "protocol",    400, "bad_request", "protocol error"},
    {ERR_TOO_LARGE,   "too_large",   413, "too_large",   "too large"},
    {ERR_UTF8,        "utf8",        400, "bad_request", "invalid UTF-8"},
    {ERR_NOMEM,       "nomem",       500, "internal",    "out of memory: retry"},
    {ERR_IO,          "io",          500, "internal",    "storage error: retry"},
    {ERR_CLOSED,      "closed",      500, "internal",    "internal error: retry"},
    {ERR_TIMEOUT,     "timeout",     500, "internal",    "internal error: retry"},
    {ERR_NOT_FOUND,   "not_found",   404, "not_found",   "not found"},
    {ERR_UNSUPPORTED, "unsupported", 400, "bad_request", "not supported"},
    {ERR_FULL,        "full",        500, "internal",    "internal error: retry"},
    {ERR_AUTH,        "auth",        401, "unauthorized", "missing or invalid token"},
    {ERR_FORBIDDEN,   "forbidden",   403, "forbidden",   "not allowed: not a member (or not an admin) of that conversation"},
    {ERR_CONFLICT,    "conflict",    409, "conflict",    "already exists"},
    {ERR_BUSY,        "busy",        503, "busy",        "server busy: retry later"},
    {ERR_RATE,        "rate_limited", 429, "rate_limited", "slow down"},
    {ERR_VERSION,     "version",     500, "internal",    "internal error: retry"},
    {ERR_BAD_JSON,    "bad_json",    400, "bad_json",    "not a JSON object"},
    {ERR_UNKNOWN_TYPE, "unknown_type", 400, "unknown_type", "unknown frame type"},
    {ERR_BAD_CREDENTIALS, "bad_credentials", 401, "bad_credentials", "wrong username or password"},
    {ERR_USER_NOT_FOUND, "user_not_found", 404, "user_not_found", "no such user"},
    {ERR_NOT_MEMBER,  "not_member",  404, "not_member",  "not a member"},
    {ERR_USERNAME_TAKEN, "username_taken", 409, "username_taken", "that username is taken"},
    {ERR_ALREADY_MEMBER, "already_member", 409, "already_member", "already a member"},
    {ERR_TOO_MANY_MEMBERS, "too_many_members", 400, "too_many_members",
     "the group is full, or a user is in too many conversations"},
    {ERR_BAD_USERNAME, "bad_username", 400, "bad_username",
     "usernames are 3-32 characters of a-z 0-9 _ . - starting with a letter or digit"},
    {ERR_BAD_PASSWORD, "bad_password", 400, "bad_password", "passwords are 8-256 bytes"},
    {ERR_TOO_MANY_CONNECTIONS, "too_many_connections", 429, "too_many_connections",
     "too many open connections for this user"},
    {ERR_FORBIDDEN_ORIGIN, "forbidden_origin", 403, "forbidden_origin",
     "this origin may not open WebSockets"},
    {ERR_METHOD,      "method_not_allowed", 405, "method_not_allowed", "method not allowed"},
    {ERR_STOPPING,    "stopping",    503, "stopping",    "server is shutting down"},
    {ERR_BAD_HANDSHAKE, "bad_handshake", 400, "bad_handshake", "invalid WebSocket handshake"},
    {ERR_BAD_VERSION, "bad_version", 426, "bad_version", "WebSocket version 13 is required"},
    {ERR_UPGRADE_REQUIRED, "upgrade_required", 426, "upgrade_required", "this endpoint speaks WebSocket"},
    {ERR_CMID_REUSED, "cmid_reused", 409, "cmid_reused",
     "that cmid was already used for a message with another body: use a fresh cmid"},
    {ERR_CORRUPT,     "corrupt",     500, "internal",    "internal error: corrupt stored data"},
    {ERR_DISK_FULL,   "disk_full",   507, "disk_full",   "the server's disk is full: retry later"},
    {ERR_UNAVAILABLE, "unavailable", 503, "unavailable", "the storage cannot be reached: retry later"},
};

_Static_assert(sizeof table / sizeof table[0] == 1 - ERR_LAST, "one row per code");

const err_info *err_info_of(int code)
{
    if (code > 0 || code < ERR_LAST) return &table[-ERR_IO];
    return &table[-code];
}

const err_info *err_table(int *n)
{
    *n = (int)(sizeof table / sizeof table[0]);
    return table;
}

const char *err_name(int code)
{
    return code > 0 || code < ERR_LAST ? "unknown" : table[-code].name;
}
