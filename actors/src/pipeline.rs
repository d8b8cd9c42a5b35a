//! Wiring: starts the StreamHub, StoreWriter and EventDecoder, each supervised
//! on its own arbiter (thread), and a source feeding the decoder.

use crate::accounts::Place;
use crate::decoder::EventDecoder;
use crate::ecs_client::Ecs;
use crate::hub::StreamHub;
use crate::metrics::Metrics;
use crate::queue_reader::{self as sqs, QueueReader};
use crate::reader::{self, Reader, SourceState, SourceStatus};
use crate::reconciler::{self, ReconcileManager};
use crate::source::simulate as sim;
use crate::source::{ReplaySource, SimulateSource};
use crate::store::Store;
use crate::writer::{self, StoreWriter};
use actix::prelude::*;
use slog::{o, Logger};
use std::path::PathBuf;
use std::sync::Arc;

/// What feeds the pipeline.
#[derive(Clone)]
pub enum Source {
    /// Nothing: the store is served as it is.
    None,
    /// The simulator's events; the simulator itself is shared with its ECS answers.
    Simulate(sim::Config, crate::source::simulate::SharedSim),
    Replay(PathBuf),
    /// One QueueReader per queue (one queue per region: accounts.md).
    Queues(Vec<(aws_sdk_sqs::Client, sqs::Config)>),
}

/// The address of the running source, if any.
#[derive(Clone)]
pub enum SourceAddr {
    None,
    Simulate(Addr<SimulateSource>),
    Replay(Addr<ReplaySource>),
    Queues(Vec<Addr<QueueReader>>),
}

/// What reconciles: the settings, and the ECS client of each account and
/// region (one [`ReconcileManager`] each).
pub struct Reconcile {
    pub settings: reconciler::Settings,
    pub places: Vec<(Place, Arc<dyn Ecs>)>,
}

/// The running actors. Dropping it stops their arbiters.
pub struct Pipeline {
    pub hub: Addr<StreamHub>,
    pub writer: Addr<StoreWriter>,
    /// The writer's read handle: the only way to observe the store.
    pub reader: Reader,
    pub decoder: Addr<EventDecoder>,
    pub source: SourceAddr,
    /// The reconcile managers (one per account and region), when reconciling.
    pub reconcile: Vec<Addr<ReconcileManager>>,
    pub metrics: Arc<Metrics>,
    arbiters: Vec<Arbiter>,
}

impl Pipeline {
    /// Starts the actors; must be called inside a running actix `System`.
    pub fn start(
        store: Arc<dyn Store>,
        config: writer::Config,
        source: Source,
        reconcile: Option<Reconcile>,
        metrics: Arc<Metrics>,
        log: &Logger,
    ) -> Pipeline {
        let store_for_reconcile = store.clone();
        // Services are refreshed only where there is an ECS to ask.
        let dirty = reconcile
            .as_ref()
            .map(|_| crate::dirty::Dirty::with_gauge(metrics.service_refreshes_pending()));
        let arbiters: Vec<Arbiter> = (0..5).map(|_| Arbiter::new()).collect();
        let (m, l) = (metrics.clone(), log.new(o!("actor" => "StreamHub")));
        let hub =
            Supervisor::start_in_arbiter(&arbiters[0].handle(), move |_| StreamHub::new(m, l));
        let (m, l, h) = (
            metrics.clone(),
            log.new(o!("actor" => "StoreWriter")),
            hub.clone(),
        );
        let (publisher, reader) = reader::channel(store.clone());
        let progress = publisher.reconcile_progress();
        let source_status = publisher.source_status();
        for (place, _) in reconcile.iter().flat_map(|r| &r.places) {
            // Not ready before each reconcile manager has found its clusters.
            progress.discovering(&ReconcileManager::progress_key(place));
        }
        // Events from elsewhere are counted (`css_events_unreconciled_total`).
        let places: Option<Vec<Place>> = reconcile
            .as_ref()
            .map(|r| r.places.iter().map(|(p, _)| p.clone()).collect());
        let d = dirty.clone();
        let writer = Supervisor::start_in_arbiter(&arbiters[1].handle(), move |_| {
            StoreWriter::new(store, h, publisher, config, m, l).with_services(d)
        });
        let (m, l, w) = (
            metrics.clone(),
            log.new(o!("actor" => "EventDecoder")),
            writer.clone(),
        );
        let d = dirty.clone();
        let decoder = Supervisor::start_in_arbiter(&arbiters[2].handle(), move |_| {
            EventDecoder::new(w, m, l)
                .with_services(d)
                .with_places(places.clone())
        });
        let status = (&reader, source_status);
        let source = source.start(&arbiters[3], &decoder, status, &metrics, log);
        let mut managers = Vec::new();
        let dirty = dirty.unwrap_or_default();
        if let Some(r) = reconcile {
            let several = r.places.len() > 1;
            for (place, ecs) in r.places {
                let mut l = log.new(o!("actor" => "Reconciler"));
                if several {
                    l = l.new(o!("account" => place.account_label().to_owned(),
                        "region" => place.region_label().to_owned()));
                }
                let deps = reconciler::Deps {
                    budget: Arc::new(reconciler::Budget::new(
                        r.settings.base.max_requests_per_second,
                    )),
                    place,
                    ecs,
                    store: store_for_reconcile.clone(),
                    writer: writer.clone(),
                    reader: reader.clone(),
                    progress: progress.clone(),
                    metrics: metrics.clone(),
                    dirty: dirty.clone(),
                };
                let settings = r.settings.clone();
                managers.push(Supervisor::start_in_arbiter(
                    &arbiters[4].handle(),
                    move |_| ReconcileManager::new(settings, deps, l),
                ));
            }
        }
        Pipeline {
            hub,
            writer,
            reader,
            decoder,
            source,
            reconcile: managers,
            metrics,
            arbiters,
        }
    }
}

impl Source {
    /// Starts the source's actor on `arbiter`, feeding `decoder`.
    fn start(
        self,
        arbiter: &Arbiter,
        decoder: &Addr<EventDecoder>,
        (reader, status): (&Reader, SourceStatus),
        metrics: &Arc<Metrics>,
        log: &Logger,
    ) -> SourceAddr {
        let d = decoder.clone();
        status.set(match self {
            Source::None => SourceState::None,
            // Down until the queues answer.
            Source::Queues(..) => SourceState::Down,
            Source::Simulate(..) | Source::Replay(_) => SourceState::Up,
        });
        match self {
            Source::None => SourceAddr::None,
            Source::Simulate(cfg, sim) => {
                let l = log.new(o!("actor" => "SimulateSource"));
                SourceAddr::Simulate(Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                    SimulateSource::new(cfg, sim, d, l)
                }))
            }
            Source::Queues(queues) => {
                let several = queues.len() > 1;
                let parts = status.parts(queues.len());
                let readers = queues
                    .into_iter()
                    .zip(parts)
                    .map(|((client, cfg), status)| {
                        let mut l = log.new(o!("actor" => "QueueReader"));
                        if several {
                            l = l.new(o!("queue" => cfg.queue.clone()));
                        }
                        let (m, r, d) = (metrics.clone(), reader.clone(), d.clone());
                        Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                            QueueReader::new(sqs::Wiring {
                                client,
                                config: cfg,
                                decoder: d,
                                reader: r,
                                status,
                                metrics: m,
                                log: l,
                            })
                        })
                    });
                SourceAddr::Queues(readers.collect())
            }
            Source::Replay(path) => {
                let l = log.new(o!("actor" => "ReplaySource"));
                SourceAddr::Replay(Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                    ReplaySource::new(path, d, l)
                }))
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}
