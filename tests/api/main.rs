//! Integration tests: one binary (faster to link), one module per feature.

mod admin;
mod ask;
mod auth;
mod bad_input;
mod conversations;
mod cors;
mod documents;
mod flood;
mod health;
mod helpers;
mod hubs;
mod limits;
mod pages;
mod providers;
mod resume;
mod retrieval;
mod revocation;
mod roles;
mod session;
mod signalr;
mod slow_clients;
mod storage_outage;
mod support;
mod tickets;
mod uploads;
mod ws;
