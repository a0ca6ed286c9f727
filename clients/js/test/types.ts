// Compiled with `tsc --noEmit` only (npm run typecheck): what an app writes must type check,
// and the mistakes below must not (each `@ts-expect-error` fails the build if it compiles).
import { WebSocket } from "ws";

import {
  CLOSE_TRY_AGAIN_LATER,
  RealtimeClient,
  type ClientFrame,
  type Message,
  type MessageEvent,
  type ServerFrame,
  type TokenGrant,
} from "../src/client.js";

const client = new RealtimeClient({
  url: ["ws://127.0.0.1:8001/ws/", "ws://127.0.0.1:8002/ws/"],
  token: "key",
  WebSocket, // the `ws` package's constructor is accepted as it is
  refreshToken: async (context): Promise<TokenGrant | null> =>
    context.reason === "unauthorized" ? null : { token: "fresh", expires_at: null },
});

client.on("message", (event: MessageEvent) => {
  const body: string = event.message.body;
  const seq: number = event.seq;
  void [body, seq];
});
client.on("reconnecting", ({ delay, cause, url }) => {
  const why: "dropped" | "draining" | "retry_after" | "overloaded" | "too_many" | "token_refresh" =
    cause;
  void [delay.toFixed(), why, url.length];
});
client.on("disconnected", ({ code }) => void (code === CLOSE_TRY_AGAIN_LATER));
client.on("recovery", ({ conversation_id, status }) => void [conversation_id, status]);

const sent: Promise<Message> = client.sendMessage("12", "hello");
void sent;
void client.send("typing", { conversation_id: "12", is_typing: true });
void client.send("ping");

// @ts-expect-error: no such event
client.on("conected", () => {});
// @ts-expect-error: a typing frame needs is_typing
void client.send("typing", { conversation_id: "12" });
// @ts-expect-error: not a status
void client.setStatus("sleeping");

function describe(frame: ServerFrame): string {
  switch (frame.type) {
    case "connected":
      return frame.instance_id;
    case "message":
      return `${frame.conversation_id}#${frame.seq}`;
    case "read":
    case "member":
      return String(frame.seq);
    case "typing":
      return String(frame.is_typing);
    case "presence":
      return frame.status;
    case "ack":
      return frame.ref;
    case "error":
      return frame.code;
    case "pong":
      return "pong";
  }
}
const resume: ClientFrame = { type: "resume", ref: "r1", positions: { "12": 40 } };
void [describe, resume];
