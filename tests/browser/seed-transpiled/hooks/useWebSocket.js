// Transpiled from tests/browser/seed/ by `npm run transpile-seed`: do not edit.
import { useState, useEffect, useCallback, useRef } from "react";
import * as signalR from "@microsoft/signalr";
function useWebSocket(hubUrl) {
  const [isConnected, setIsConnected] = useState(false);
  const [error, setError] = useState(null);
  const connectionRef = useRef(null);
  useEffect(() => {
    const connection = new signalR.HubConnectionBuilder().withUrl(hubUrl).withAutomaticReconnect().build();
    connectionRef.current = connection;
    connection.start().then(() => {
      console.log("WebSocket connected");
      setIsConnected(true);
      setError(null);
    }).catch((err) => {
      console.error("WebSocket connection failed:", err);
      setError(err);
      setIsConnected(false);
    });
    connection.onreconnecting(() => {
      console.log("WebSocket reconnecting...");
      setIsConnected(false);
    });
    connection.onreconnected(() => {
      console.log("WebSocket reconnected");
      setIsConnected(true);
    });
    connection.onclose(() => {
      console.log("WebSocket closed");
      setIsConnected(false);
    });
    return () => {
      connection.stop();
    };
  }, [hubUrl]);
  const sendMessage = useCallback((method, ...args) => {
    if (connectionRef.current?.state === signalR.HubConnectionState.Connected) {
      return connectionRef.current.invoke(method, ...args);
    }
    throw new Error("WebSocket not connected");
  }, []);
  const on = useCallback((eventName, callback) => {
    connectionRef.current?.on(eventName, callback);
  }, []);
  const off = useCallback((eventName, callback) => {
    connectionRef.current?.off(eventName, callback);
  }, []);
  return { isConnected, error, sendMessage, on, off };
}
export {
  useWebSocket
};
