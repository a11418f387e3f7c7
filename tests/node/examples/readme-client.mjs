import * as signalR from "@microsoft/signalr";

const base = "http://127.0.0.1:8080";

// The client may put the token in the URL (browsers always do), where only a single-use
// stream ticket is accepted: each connect, reconnects included, trades the key for one.
async function streamTicket() {
  const res = await fetch(`${base}/api/v1/stream-tickets`, {
    method: "POST",
    headers: { "X-API-Key": process.env.KEY },
  });
  if (!res.ok) throw new Error(`stream ticket: HTTP ${res.status}`);
  return (await res.json()).ticket;
}

const hub = new signalR.HubConnectionBuilder()
  .withUrl(`${base}/api/v1/chat/ws`, { accessTokenFactory: streamTicket })
  .withStatefulReconnect() // a dropped WebSocket comes back to the same connection
  .withAutomaticReconnect() // and if it cannot, a new connection
  .configureLogging(signalR.LogLevel.Warning)
  .build();
hub.on("ReceiveToken", (token) => { process.stdout.write(token); });
hub.on("StreamComplete", (meta) => console.log(`\n[${meta.provider}, ${meta.tokens} tokens]`));
hub.on("Error", (message) => console.error(message));
await hub.start();
await hub.invoke("SendMessage", "What is RAG?", 5);
await hub.stop();
