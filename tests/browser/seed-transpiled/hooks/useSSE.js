// Transpiled from tests/browser/seed/ by `npm run transpile-seed`: do not edit.
import { useState, useEffect } from "react";
function useSSE(url, options) {
  const [isConnected, setIsConnected] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!url) return;
    let eventSource = null;
    try {
      eventSource = new EventSource(url);
      eventSource.onopen = () => {
        console.log("SSE connection opened");
        setIsConnected(true);
        setError(null);
      };
      eventSource.onmessage = (event) => {
        try {
          const data = JSON.parse(event.data);
          if (data.done) {
            options.onComplete?.();
            eventSource?.close();
          } else {
            options.onMessage(data);
          }
        } catch (err) {
          console.error("Failed to parse SSE message:", err);
        }
      };
      eventSource.onerror = (err) => {
        console.error("SSE error:", err);
        const error2 = new Error("SSE connection failed");
        setError(error2);
        setIsConnected(false);
        options.onError?.(error2);
        eventSource?.close();
      };
    } catch (err) {
      const error2 = err instanceof Error ? err : new Error("Unknown error");
      setError(error2);
      options.onError?.(error2);
    }
    return () => {
      eventSource?.close();
      setIsConnected(false);
    };
  }, [url, options]);
  return { isConnected, error };
}
export {
  useSSE
};
