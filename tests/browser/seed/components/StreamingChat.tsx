import React, { useState } from 'react';
import { useSSE } from '../hooks/useSSE';

export function StreamingChat() {
  const [question, setQuestion] = useState('');
  const [streamingAnswer, setStreamingAnswer] = useState('');
  const [isStreaming, setIsStreaming] = useState(false);
  const [sseUrl, setSseUrl] = useState<string | null>(null);

  const { isConnected, error } = useSSE(sseUrl, {
    onMessage: (data) => {
      if (data.token) {
        setStreamingAnswer((prev) => prev + data.token);
      }
    },
    onComplete: () => {
      console.log('Streaming completed');
      setIsStreaming(false);
      setSseUrl(null);
    },
    onError: (err) => {
      console.error('Streaming error:', err);
      setIsStreaming(false);
      setSseUrl(null);
    }
  });

  const handleSubmit = (e: React.FormEvent) => {
    e.preventDefault();
    
    if (!question.trim()) return;

    // Reset state
    setStreamingAnswer('');
    setIsStreaming(true);

    // Build SSE URL with query params
    const params = new URLSearchParams({
      question: question,
      topK: '5'
    });
    
    const token = localStorage.getItem('token');
    const url = `/api/v1/ask/stream?${params}`;
    
    // Note: EventSource doesn't support custom headers
    // For auth, use cookie-based auth or include token in URL (less secure)
    setSseUrl(url);
  };

  return (
    <div className="max-w-4xl mx-auto p-6">
      <h2 className="text-2xl font-bold mb-4">Streaming RAG Chat</h2>

      <form onSubmit={handleSubmit} className="mb-6">
        <div className="flex gap-2">
          <input
            type="text"
            value={question}
            onChange={(e) => setQuestion(e.target.value)}
            placeholder="Ask a question..."
            className="flex-1 px-4 py-2 border rounded-lg focus:outline-none focus:ring-2 focus:ring-blue-500"
            disabled={isStreaming}
          />
          <button
            type="submit"
            disabled={isStreaming || !question.trim()}
            className="px-6 py-2 bg-blue-600 text-white rounded-lg hover:bg-blue-700 disabled:opacity-50 disabled:cursor-not-allowed"
          >
            {isStreaming ? 'Streaming...' : 'Ask'}
          </button>
        </div>
      </form>

      {/* Streaming Status */}
      {isStreaming && (
        <div className="mb-4 flex items-center gap-2 text-sm text-gray-600">
          <div className="animate-pulse">●</div>
          <span>{isConnected ? 'Streaming...' : 'Connecting...'}</span>
        </div>
      )}

      {/* Error Display */}
      {error && (
        <div className="mb-4 p-4 bg-red-50 border border-red-200 rounded-lg text-red-700">
          Error: {error.message}
        </div>
      )}

      {/* Streaming Answer */}
      {streamingAnswer && (
        <div className="p-6 bg-white border rounded-lg shadow-sm">
          <h3 className="text-lg font-semibold mb-2 text-gray-700">Answer:</h3>
          <div className="prose max-w-none">
            {streamingAnswer}
            {isStreaming && (
              <span className="inline-block w-2 h-4 ml-1 bg-blue-600 animate-pulse" />
            )}
          </div>
        </div>
      )}
    </div>
  );
}
