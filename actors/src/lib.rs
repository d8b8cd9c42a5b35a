//! The core of cluster-state-service: the domain model, the store, and the
//! actors that move ECS change events into it.
//!
//! # Layout
//! - [`model`], [`arn`], [`time`]: tasks and container instances in the v0.3 API
//!   shape, ECS ARNs, timestamps.
//! - [`decode`]: EventBridge JSON (bare or SNS-wrapped) → [`model::Entry`];
//!   a typed [`decode::Error`] for every way a message can be bad.
//! - [`store`]: the [`store::Store`] trait and its version rule
//!   ([`store::supersedes`]); [`store::Embedded`] is the redb backend.
//! - [`view`]: the in-memory view; readers get O(1) [`view::Snapshot`]s
//!   through a [`reader::Reader`], the writer's read handle.
//! - Actors, each with its messages beside it:
//!   source ([`source::SimulateSource`], [`source::ReplaySource`]) →
//!   [`decoder::EventDecoder`] → [`writer::StoreWriter`] → [`hub::StreamHub`].
//!   [`pipeline::Pipeline`] starts them, supervised.
//! - [`sim`]: the seedable ECS simulator behind `--simulate`.
//! - [`metrics`]: counters the HTTP layer renders at `/metrics`.
//!
//! Start reading at [`writer`]: it owns every write and the view.

pub mod arn;
pub mod check;
pub mod cluster_state;
pub mod decode;
pub mod decoder;
pub mod ecs;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod reader;
pub mod reconciler;
pub mod retry;
pub mod sim;
pub mod source;
pub mod store;
pub mod time;
pub mod view;
pub mod writer;
