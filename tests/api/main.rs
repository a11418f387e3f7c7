//! Integration tests: one binary (faster to link), one module per feature.

mod admin;
mod ask;
mod auth;
mod bad_input;
mod conversations;
mod cors;
mod documents;
mod health;
mod helpers;
mod limits;
mod pages;
mod providers;
mod retrieval;
mod signalr;
mod support;
mod tickets;
mod uploads;
mod ws;
