//! Retrieval-augmented generation pieces that need no I/O: chunking documents, turning a
//! question into a safe full-text query, choosing a conversation's history, and rendering
//! the prompt an LLM sees; and `ingest`, which loads chunked documents into the store.

pub mod chunking;
pub mod fts_query;
pub mod history;
pub mod ingest;
pub mod prompt;
