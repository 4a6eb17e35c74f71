// REST calls (docs/protocol.md, "Accounts" and "Conversations").
// Every call returns the parsed JSON body or throws an ApiError.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || `http_${status}`;
  }
}

let token = null;
let onUnauthorized = () => {};

export function setToken(t) { token = t; }

/** Called when an authenticated request answers 401 (token revoked or expired). */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function request(method, path, body, { auth = true } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
  }
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* empty or not JSON */ }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    if (res.status === 401 && auth) onUnauthorized();
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

export const register = (username, password) =>
  request('POST', '/v1/users', { username, password }, { auth: false });

/** deviceKey: this browser's key from an earlier login of the user, or null. */
export const login = (username, password, deviceKey) =>
  request('POST', '/v1/sessions', deviceKey ? { username, password, device_key: deviceKey } : { username, password },
    { auth: false });

export const logout = () => request('DELETE', '/v1/sessions/current');

export const inbox = (changedSince) =>
  request('GET', '/v1/conversations' + (changedSince ? `?changed_since=${changedSince}` : ''));

export const createDirect = (user) =>
  request('POST', '/v1/conversations', { type: 'direct', with: user });

export const createGroup = (name, members) =>
  request('POST', '/v1/conversations', { type: 'group', name, members });

export const addMember = (conv, user) =>
  request('POST', `/v1/conversations/${conv}/members`, { user });

export const leave = (conv, user) =>
  request('DELETE', `/v1/conversations/${conv}/members/${encodeURIComponent(user)}`);

export const receipts = (conv) => request('GET', `/v1/conversations/${conv}/receipts`);

/** Human text for an error code, for forms. */
export function describe(err) {
  const texts = {
    bad_username: 'Usernames are 3–32 characters: a–z, 0–9, _ . - (starting with a letter or digit).',
    bad_password: 'Passwords are at least 8 characters.',
    username_taken: 'That username is taken.',
    bad_credentials: 'Wrong username or password.',
    user_not_found: 'No user with that name.',
    already_member: 'Already a member of this group.',
    too_many_members: 'Too many members for one group.',
    forbidden: 'You are not allowed to do that.',
    network: 'Cannot reach the server. Check your connection.',
    busy: 'The server is busy. Try again in a moment.',
  };
  if (err && texts[err.code]) return texts[err.code];
  if (err && err.code === 'bad_request') return err.message ? `Not accepted: ${err.message}.` : 'Not accepted.';
  return (err && err.message) || 'Something went wrong.';
}
