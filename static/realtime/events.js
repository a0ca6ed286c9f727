/** What a RealtimeClient emits: the server's events plus its own connection and stream news. */
export const STATES = Object.freeze({
    CONNECTING: "connecting",
    OPEN: "open",
    RECONNECTING: "reconnecting",
    CLOSED: "closed",
});
export const EVENT_TYPES = new Set([
    "connected",
    "message",
    "typing",
    "read",
    "member",
    "presence",
    "error",
    "state",
    "connecting",
    "disconnected",
    "reconnecting",
    "resumed",
    "reset",
    "subscribed",
    "unsubscribed",
    "recovery",
]);
