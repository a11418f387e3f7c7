import { useState, useEffect, useCallback, useRef } from 'react';
import * as signalR from '@microsoft/signalr';

export function useWebSocket(hubUrl: string) {
  const [isConnected, setIsConnected] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const connectionRef = useRef<signalR.HubConnection | null>(null);

  useEffect(() => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(hubUrl)
      .withAutomaticReconnect()
      .build();

    connectionRef.current = connection;

    connection.start()
      .then(() => {
        console.log('WebSocket connected');
        setIsConnected(true);
        setError(null);
      })
      .catch((err) => {
        console.error('WebSocket connection failed:', err);
        setError(err);
        setIsConnected(false);
      });

    connection.onreconnecting(() => {
      console.log('WebSocket reconnecting...');
      setIsConnected(false);
    });

    connection.onreconnected(() => {
      console.log('WebSocket reconnected');
      setIsConnected(true);
    });

    connection.onclose(() => {
      console.log('WebSocket closed');
      setIsConnected(false);
    });

    return () => {
      connection.stop();
    };
  }, [hubUrl]);

  const sendMessage = useCallback((method: string, ...args: any[]) => {
    if (connectionRef.current?.state === signalR.HubConnectionState.Connected) {
      return connectionRef.current.invoke(method, ...args);
    }
    throw new Error('WebSocket not connected');
  }, []);

  const on = useCallback((eventName: string, callback: (...args: any[]) => void) => {
    connectionRef.current?.on(eventName, callback);
  }, []);

  const off = useCallback((eventName: string, callback: (...args: any[]) => void) => {
    connectionRef.current?.off(eventName, callback);
  }, []);

  return { isConnected, error, sendMessage, on, off };
}
