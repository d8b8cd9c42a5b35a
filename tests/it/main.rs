//! Integration tests, one crate (one binary) with a module per area.

mod api;
mod binary;
mod fixtures;
mod ingest;
mod pipeline;
mod servers;
mod support;
