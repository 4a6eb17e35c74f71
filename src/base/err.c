#include "base/err.h"

const char *err_name(int code)
{
    switch (code) {
    case ERR_OK:          return "ok";
    case ERR_AGAIN:       return "again";
    case ERR_INVALID:     return "invalid";
    case ERR_PROTOCOL:    return "protocol";
    case ERR_TOO_LARGE:   return "too_large";
    case ERR_UTF8:        return "utf8";
    case ERR_NOMEM:       return "nomem";
    case ERR_IO:          return "io";
    case ERR_CLOSED:      return "closed";
    case ERR_TIMEOUT:     return "timeout";
    case ERR_NOT_FOUND:   return "not_found";
    case ERR_UNSUPPORTED: return "unsupported";
    case ERR_FULL:        return "full";
    case ERR_AUTH:        return "auth";
    case ERR_FORBIDDEN:   return "forbidden";
    case ERR_CONFLICT:    return "conflict";
    case ERR_BUSY:        return "busy";
    case ERR_RATE:        return "rate_limited";
    case ERR_VERSION:     return "version";
    }
    return "unknown";
}
