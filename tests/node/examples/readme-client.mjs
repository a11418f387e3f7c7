import * as signalR from "@microsoft/signalr";

const hub = new signalR.HubConnectionBuilder()
  .withUrl("http://127.0.0.1:8080/api/v1/chat/ws", { accessTokenFactory: () => process.env.KEY })
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();
hub.on("ReceiveToken", (token) => { process.stdout.write(token); });
hub.on("StreamComplete", (meta) => console.log(`\n[${meta.provider}, ${meta.tokens} tokens]`));
hub.on("Error", (message) => console.error(message));
await hub.start();
await hub.invoke("SendMessage", "What is RAG?", 5);
await hub.stop();
