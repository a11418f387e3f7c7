// Transpiled from tests/browser/seed/ by `npm run transpile-seed`: do not edit.
import React, { useState } from "react";
import { useSSE } from "../hooks/useSSE";
function StreamingChat() {
  const [question, setQuestion] = useState("");
  const [streamingAnswer, setStreamingAnswer] = useState("");
  const [isStreaming, setIsStreaming] = useState(false);
  const [sseUrl, setSseUrl] = useState(null);
  const { isConnected, error } = useSSE(sseUrl, {
    onMessage: (data) => {
      if (data.token) {
        setStreamingAnswer((prev) => prev + data.token);
      }
    },
    onComplete: () => {
      console.log("Streaming completed");
      setIsStreaming(false);
      setSseUrl(null);
    },
    onError: (err) => {
      console.error("Streaming error:", err);
      setIsStreaming(false);
      setSseUrl(null);
    }
  });
  const handleSubmit = (e) => {
    e.preventDefault();
    if (!question.trim()) return;
    setStreamingAnswer("");
    setIsStreaming(true);
    const params = new URLSearchParams({
      question,
      topK: "5"
    });
    const token = localStorage.getItem("token");
    const url = `/api/v1/ask/stream?${params}`;
    setSseUrl(url);
  };
  return /* @__PURE__ */ React.createElement("div", { className: "max-w-4xl mx-auto p-6" }, /* @__PURE__ */ React.createElement("h2", { className: "text-2xl font-bold mb-4" }, "Streaming RAG Chat"), /* @__PURE__ */ React.createElement("form", { onSubmit: handleSubmit, className: "mb-6" }, /* @__PURE__ */ React.createElement("div", { className: "flex gap-2" }, /* @__PURE__ */ React.createElement(
    "input",
    {
      type: "text",
      value: question,
      onChange: (e) => setQuestion(e.target.value),
      placeholder: "Ask a question...",
      className: "flex-1 px-4 py-2 border rounded-lg focus:outline-none focus:ring-2 focus:ring-blue-500",
      disabled: isStreaming
    }
  ), /* @__PURE__ */ React.createElement(
    "button",
    {
      type: "submit",
      disabled: isStreaming || !question.trim(),
      className: "px-6 py-2 bg-blue-600 text-white rounded-lg hover:bg-blue-700 disabled:opacity-50 disabled:cursor-not-allowed"
    },
    isStreaming ? "Streaming..." : "Ask"
  ))), isStreaming && /* @__PURE__ */ React.createElement("div", { className: "mb-4 flex items-center gap-2 text-sm text-gray-600" }, /* @__PURE__ */ React.createElement("div", { className: "animate-pulse" }, "\u25CF"), /* @__PURE__ */ React.createElement("span", null, isConnected ? "Streaming..." : "Connecting...")), error && /* @__PURE__ */ React.createElement("div", { className: "mb-4 p-4 bg-red-50 border border-red-200 rounded-lg text-red-700" }, "Error: ", error.message), streamingAnswer && /* @__PURE__ */ React.createElement("div", { className: "p-6 bg-white border rounded-lg shadow-sm" }, /* @__PURE__ */ React.createElement("h3", { className: "text-lg font-semibold mb-2 text-gray-700" }, "Answer:"), /* @__PURE__ */ React.createElement("div", { className: "prose max-w-none" }, streamingAnswer, isStreaming && /* @__PURE__ */ React.createElement("span", { className: "inline-block w-2 h-4 ml-1 bg-blue-600 animate-pulse" }))));
}
export {
  StreamingChat
};
