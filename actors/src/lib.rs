//! The core of cluster-state-service: the domain model, the store, and the
//! actors that move ECS change events into it.
//!
//! # Layout
//! - The model: [`model`] (tasks, container instances and services in the
//!   v0.3 API shape), [`arn`], [`time`]; [`decoder::decode`] turns EventBridge JSON
//!   (bare or SNS-wrapped) into a [`model::Entry`], with a typed
//!   [`decoder::decode::Error`] for every way a message can be bad.
//! - The store: [`store`] (the [`store::Store`] trait, its version rule
//!   [`store::supersedes`], the embedded redb and the etcd backends); [`view`]
//!   (the in-memory view, O(1) [`view::Snapshot`]s) read through
//!   [`reader::Reader`], the writer's read handle. The store keeps each
//!   entity's versions for `store.history_retention` (history.md): the
//!   state at a past revision, an entity's history, and a service's
//!   [`timeline`] are read from it, never from the view.
//! - The five actors, each with its messages beside it:
//!   [`queue_reader::QueueReader`] (SQS, one per queue; or a [`source`]:
//!   `--simulate`, `--replay`) → [`decoder::EventDecoder`] →
//!   [`writer::StoreWriter`] → [`hub::StreamHub`]; one [`reconciler`] per
//!   cluster, under one manager per AWS account and region ([`accounts`]),
//!   over the ECS client [`ecs_client`] (the AWS SDK, or the simulator). [`dirty`] is the set of
//!   services to describe again, which the decoder and the writer mark and
//!   the reconcilers take. [`pipeline::Pipeline`] starts them, supervised.
//! - [`source::simulate`]: the seedable ECS simulator behind `--simulate`
//!   (the world, its event source and its ECS client).
//! - [`metrics`] (the counters of `/metrics`), [`cluster_state`] (the gauges
//!   of `/metrics/state`), [`retry`] (backoff with jitter), [`check`]
//!   (configuration checks).
//!
//! Start reading at [`writer`]: it owns every write and the view.

pub mod accounts;
pub mod arn;
pub mod check;
pub mod cluster_state;
pub mod decoder;
pub mod dirty;
pub mod ecs_client;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod queue_reader;
pub mod reader;
pub mod reconciler;
pub mod retry;
pub mod source;
pub mod store;
pub mod time;
pub mod timeline;
pub mod view;
pub mod writer;
