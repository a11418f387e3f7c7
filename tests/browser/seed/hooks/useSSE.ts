import { useState, useEffect, useCallback } from 'react';

interface UseSSEOptions {
  onMessage: (data: any) => void;
  onError?: (error: Error) => void;
  onComplete?: () => void;
}

export function useSSE(url: string | null, options: UseSSEOptions) {
  const [isConnected, setIsConnected] = useState(false);
  const [error, setError] = useState<Error | null>(null);

  useEffect(() => {
    if (!url) return;

    let eventSource: EventSource | null = null;
    
    try {
      eventSource = new EventSource(url);
      
      eventSource.onopen = () => {
        console.log('SSE connection opened');
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
          console.error('Failed to parse SSE message:', err);
        }
      };

      eventSource.onerror = (err) => {
        console.error('SSE error:', err);
        const error = new Error('SSE connection failed');
        setError(error);
        setIsConnected(false);
        options.onError?.(error);
        eventSource?.close();
      };
    } catch (err) {
      const error = err instanceof Error ? err : new Error('Unknown error');
      setError(error);
      options.onError?.(error);
    }

    return () => {
      eventSource?.close();
      setIsConnected(false);
    };
  }, [url, options]);

  return { isConnected, error };
}
