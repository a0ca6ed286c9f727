/**
 * The wire contract of the realtime backbone (docs/protocol.md) as types: every client frame,
 * every server frame, the close codes and the REST bodies this client uses.
 */
// ---- close codes ---------------------------------------------------------------------------
export const CLOSE_NORMAL = 1000;
/** Frame too large, whatever its size. */
export const CLOSE_MESSAGE_TOO_BIG = 1009;
/** The instance is draining: another one will take the client, so reconnect at once. */
export const CLOSE_SERVICE_RESTART = 1012;
/** Too many connects in flight; the reason may say `retry_after_ms=<N>`. */
export const CLOSE_TRY_AGAIN_LATER = 1013;
/** The client read too slowly and its queue overflowed: reconnect and resume. */
export const CLOSE_SLOW_CONSUMER = 4008;
/** Missing, invalid, revoked or expired token, or a deactivated user. */
export const CLOSE_UNAUTHORIZED = 4401;
/** `user_id` does not match the token: retrying cannot help. */
export const CLOSE_FORBIDDEN = 4403;
/** Too many sockets for this user, or sustained flooding: back off hard. */
export const CLOSE_TOO_MANY = 4429;
