//! A seedable ECS cluster simulator: clusters, container instances and tasks
//! (EC2 and Fargate) whose changes come out as EventBridge events in the real
//! shape, with duplicates, late deliveries, drops and (on request) malformed
//! messages mixed in. Pure logic: [`crate::source::simulate`] drives it on a timer.
//!
//! Tasks move PENDING → RUNNING → STOPPING → STOPPED with growing versions; a
//! STOPPED task is replaced by a new PENDING one, so the population stays put.
//!
//! Each cluster runs three services (`web`, `api`, `worker`): their tasks have
//! `group` `service:NAME` and `startedBy` the deployment's id. Now and then a
//! service rolls out a new task definition revision: its tasks are replaced
//! one by one, the rollout goes IN_PROGRESS → COMPLETED (now and then
//! FAILED), and `ECS Deployment State Change` events announce it. Services
//! are answered by [`Simulator::service_entry`], as `DescribeServices` would.

use crate::decoder::RawMessage;
use crate::model::{Deployment, Entry, LoadBalancer, Service, ServiceEvent, MAX_SERVICE_EVENTS};
use crate::time::{format_ms, now_ms};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};

/// Simulator settings (`[simulate]` in the configuration file).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed of every random choice: the same seed, the same world. Default 1.
    pub seed: u64,
    /// Clusters, 1–1000. Default 3.
    pub clusters: usize,
    /// Container instances per cluster, 0–100,000. Default 10.
    pub instances_per_cluster: usize,
    /// Tasks per instance, 0–1000. Default 8.
    pub tasks_per_instance: usize,
    /// Task changes per second once the initial state is out, 0–1,000,000.
    /// Default 20.
    pub events_per_second: f64,
    /// Share of events sent twice, 0–1. Default 0.05.
    pub duplicate_rate: f64,
    /// Share of events delivered late (after newer ones), 0–1. Default 0.05.
    pub reorder_rate: f64,
    /// Share of events never delivered, 0–1. Default 0.
    pub drop_rate: f64,
    /// Share of messages sent malformed (truncated JSON), 0–1. Default 0.
    pub malformed_rate: f64,
    /// Simulated AWS accounts, 1–1000; each has `clusters` clusters in each
    /// of `regions`. The first is 123456789012. Default 1.
    pub accounts: usize,
    /// Simulated regions, 1–30 region names. Default `["us-west-2"]`.
    pub regions: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            clusters: 3,
            instances_per_cluster: 10,
            tasks_per_instance: 8,
            events_per_second: 20.0,
            duplicate_rate: 0.05,
            reorder_rate: 0.05,
            drop_rate: 0.0,
            malformed_rate: 0.0,
            accounts: 1,
            regions: vec![REGION.to_owned()],
        }
    }
}

impl Config {
    /// Ranges serde's types do not check.
    /// The simulated accounts and regions, in the simulator's order.
    pub fn places(&self) -> Vec<crate::accounts::Place> {
        let accounts = (0..self.accounts.max(1)).map(|a| (ACCOUNT + a as u64).to_string());
        accounts
            .flat_map(|a| {
                self.regions
                    .iter()
                    .map(move |r| crate::accounts::Place::new(Some(&a), Some(r)))
            })
            .collect()
    }

    pub fn check(&self, problems: &mut Vec<String>) {
        use crate::check::within;
        within("simulate.clusters", self.clusters, 1, 1000, problems);
        within("simulate.accounts", self.accounts, 1, 1000, problems);
        within("simulate.regions", self.regions.len(), 1, 30, problems);
        for r in self
            .regions
            .iter()
            .filter(|r| !crate::arn::is_valid_region(r))
        {
            problems.push(format!(
                "simulate.regions: {r:?} is not a region name (such as us-east-1)"
            ));
        }
        within(
            "simulate.instances_per_cluster",
            self.instances_per_cluster,
            0,
            100_000,
            problems,
        );
        within(
            "simulate.tasks_per_instance",
            self.tasks_per_instance,
            0,
            1000,
            problems,
        );
        within(
            "simulate.events_per_second",
            self.events_per_second,
            0.0,
            1e6,
            problems,
        );
        for (key, rate) in [
            ("simulate.duplicate_rate", self.duplicate_rate),
            ("simulate.reorder_rate", self.reorder_rate),
            ("simulate.drop_rate", self.drop_rate),
            ("simulate.malformed_rate", self.malformed_rate),
        ] {
            within(key, rate, 0.0, 1.0, problems);
        }
    }
}

/// The simulator's first region and account (the only ones by default).
const REGION: &str = "us-west-2";
const ACCOUNT: u64 = 123_456_789_012;
const CLUSTER_NAMES: [&str; 8] = [
    "prod-web",
    "batch",
    "9-analytics",
    "staging",
    "ml_train",
    "edge",
    "payments",
    "search",
];
/// Chance per step that a service starts a rollout.
const ROLLOUT_START_CHANCE: f64 = 0.005;
/// Batches between two steps of one rollout.
const ROLLOUT_BATCHES: u64 = 3;
/// Crashed new tasks after which a failing rollout fails (its deployment's
/// `failedTasks`).
const FAILED_TASKS: u32 = 3;
const FAMILIES: [(&str, &str); 5] = [
    ("web", "service"),
    ("api", "service"),
    ("worker", "service"),
    ("cron", "family"),
    ("report", "family"),
];

/// A simulated container instance.
#[derive(Debug, Clone)]
pub struct SimInstance {
    pub arn: String,
    pub cluster: usize,
    pub ec2_id: String,
    pub version: u64,
    pub status: &'static str,
    pub agent_connected: bool,
    pub registered_ms: i64,
}

/// A simulated service: one per service family and cluster.
#[derive(Debug, Clone)]
pub struct SimService {
    pub arn: String,
    pub cluster: usize,
    pub family: usize,
    pub created_ms: i64,
    /// The deployments, PRIMARY (the newest) first.
    pub deployments: Vec<SimDeployment>,
    /// Service events, newest first (at most [`MAX_SERVICE_EVENTS`]).
    pub events: VecDeque<(String, i64, String)>,
    /// A failing rollout's crashes of new tasks left before it fails (as
    /// ECS's deployment circuit breaker does after a threshold of them).
    failing_in: Option<u32>,
    /// The batch its rollout last moved in: a rollout takes at most one
    /// step per [`ROLLOUT_BATCHES`] batches, so that its stages are seen
    /// apart in time (a batch a tick: seconds a rollout, as ECS's take minutes).
    stepped: u64,
}

/// A deployment of a simulated service.
#[derive(Debug, Clone)]
pub struct SimDeployment {
    pub id: String,
    pub revision: u64,
    pub rollout: &'static str,
    pub reason: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl SimService {
    /// The PRIMARY deployment.
    pub fn primary(&self) -> &SimDeployment {
        &self.deployments[0]
    }

    /// Whether a rollout is under way.
    pub fn rolling(&self) -> bool {
        self.primary().rollout == "IN_PROGRESS"
    }
}

/// A simulated task.
#[derive(Debug, Clone)]
pub struct SimTask {
    pub arn: String,
    pub cluster: usize,
    pub instance: Option<usize>,
    pub family: usize,
    /// Its task definition revision.
    pub revision: u64,
    /// The deployment that started it (service tasks).
    pub deployment: Option<String>,
    pub version: u64,
    pub last_status: &'static str,
    pub desired_status: &'static str,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub stopped_ms: Option<i64>,
    /// It stopped because its essential container exited 1 (a failing
    /// rollout's tasks crash).
    pub crashed: bool,
}

/// The simulated ECS account and its event stream.
pub struct Simulator {
    config: Config,
    rng: fastrand::Rng,
    clusters: Vec<String>,
    /// Each cluster's region and account.
    places: Vec<(String, String)>,
    instances: Vec<SimInstance>,
    tasks: Vec<SimTask>,
    services: Vec<SimService>,
    /// Where each task, instance and cluster ARN is, so that answering ECS
    /// questions about a world of 100,000s of tasks takes no scan.
    task_at: HashMap<String, usize>,
    instance_at: HashMap<String, usize>,
    cluster_at: HashMap<String, usize>,
    /// Each cluster's tasks.
    tasks_of: Vec<Vec<usize>>,
    /// Events of the initial state not yet delivered.
    initial: VecDeque<String>,
    /// Late events: (batch number at which to deliver, body).
    late: Vec<(u64, String)>,
    batch: u64,
    next_id: u64,
}

impl Simulator {
    /// Builds the initial state and queues its events.
    pub fn new(config: Config) -> Self {
        let name = |i: usize| match (CLUSTER_NAMES.get(i), i / CLUSTER_NAMES.len()) {
            (Some(n), _) => (*n).to_owned(),
            (None, round) => format!("{}-{round}", CLUSTER_NAMES[i % CLUSTER_NAMES.len()]),
        };
        // The same cluster names in every account and region.
        let mut clusters = Vec::new();
        let mut places = Vec::new();
        for a in 0..config.accounts.max(1) {
            for region in &config.regions {
                for i in 0..config.clusters {
                    clusters.push(name(i));
                    places.push((region.clone(), (ACCOUNT + a as u64).to_string()));
                }
            }
        }
        let mut sim = Simulator {
            rng: fastrand::Rng::with_seed(config.seed),
            clusters,
            places,
            config,
            instances: Vec::new(),
            tasks: Vec::new(),
            services: Vec::new(),
            task_at: HashMap::new(),
            instance_at: HashMap::new(),
            cluster_at: HashMap::new(),
            tasks_of: Vec::new(),
            initial: VecDeque::new(),
            late: Vec::new(),
            batch: 0,
            next_id: 0,
        };
        let now = now_ms();
        for c in 0..sim.clusters.len() {
            sim.add_services(c, now);
            for _ in 0..sim.config.instances_per_cluster {
                let inst = SimInstance {
                    arn: format!(
                        "{}:container-instance/{}/{}",
                        sim.prefix(c),
                        sim.clusters[c],
                        hex(&mut sim.rng, 32)
                    ),
                    cluster: c,
                    ec2_id: format!("i-{}", hex(&mut sim.rng, 17)),
                    version: 1 + sim.rng.usize(..5) as u64,
                    status: "ACTIVE",
                    agent_connected: true,
                    registered_ms: now - 86_400_000,
                };
                sim.instances.push(inst);
            }
            let per_cluster = sim.config.instances_per_cluster * sim.config.tasks_per_instance;
            for _ in 0..per_cluster {
                let mut t = sim.new_task(c, now);
                t.version = 2;
                t.last_status = "RUNNING";
                t.started_ms = Some(now);
                sim.tasks.push(t);
            }
        }
        sim.cluster_at = (0..sim.clusters.len())
            .map(|c| (sim.cluster_arn(c), c))
            .collect();
        sim.tasks_of = vec![Vec::new(); sim.clusters.len()];
        for (i, t) in sim.tasks.iter().enumerate() {
            sim.task_at.insert(t.arn.clone(), i);
            sim.tasks_of[t.cluster].push(i);
        }
        for (i, x) in sim.instances.iter().enumerate() {
            sim.instance_at.insert(x.arn.clone(), i);
        }
        for i in 0..sim.instances.len() {
            let e = sim.instance_event(i);
            sim.initial.push_back(e);
        }
        for t in 0..sim.tasks.len() {
            let e = sim.task_event(t);
            sim.initial.push_back(e);
        }
        sim
    }

    /// One service of cluster `c` per service family, its rollout done a
    /// day ago.
    fn add_services(&mut self, c: usize, now: i64) {
        for (f, (name, kind)) in FAMILIES.iter().enumerate() {
            if *kind != "service" {
                continue;
            }
            let id = self.deployment_id();
            self.services.push(SimService {
                arn: format!("{}:service/{}/{name}", self.prefix(c), self.clusters[c]),
                cluster: c,
                family: f,
                created_ms: now - 86_400_000,
                deployments: vec![SimDeployment {
                    reason: format!("ECS deployment {id} completed."),
                    id,
                    revision: 3 + f as u64,
                    rollout: "COMPLETED",
                    created_ms: now - 86_400_000,
                    updated_ms: now - 86_000_000,
                }],
                events: VecDeque::new(),
                failing_in: None,
                stepped: 0,
            });
        }
    }

    /// The simulated cluster names.
    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    /// The index of the cluster `cluster` (its ARN, or its name: the
    /// first cluster of that name).
    pub fn cluster_index(&self, cluster: &str) -> Option<usize> {
        self.cluster_at
            .get(cluster)
            .copied()
            .or_else(|| self.clusters.iter().position(|c| c == cluster))
    }

    /// The tasks of cluster `c`.
    pub fn tasks_of(&self, c: usize) -> impl Iterator<Item = &SimTask> + '_ {
        let of_c = self.tasks_of.get(c).map_or(&[][..], Vec::as_slice);
        of_c.iter().map(|&t| &self.tasks[t])
    }

    /// Puts a new task in slot `t` (its predecessor is forgotten).
    fn replace_task(&mut self, t: usize, replacement: SimTask) {
        self.task_at.remove(&self.tasks[t].arn);
        self.task_at.insert(replacement.arn.clone(), t);
        self.tasks[t] = replacement;
    }

    /// The simulator's truth: its current tasks.
    pub fn tasks(&self) -> &[SimTask] {
        &self.tasks
    }

    /// The simulator's truth: its container instances.
    pub fn instances(&self) -> &[SimInstance] {
        &self.instances
    }

    /// The simulator's truth: its services.
    pub fn services(&self) -> &[SimService] {
        &self.services
    }

    fn deployment_id(&mut self) -> String {
        format!(
            "ecs-svc/{}",
            1_000_000_000_000u64 + self.rng.usize(..1_000_000_000) as u64
        )
    }

    /// The service of a task's cluster and family, if its family is a service.
    fn service_of(&self, cluster: usize, family: usize) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.cluster == cluster && s.family == family)
    }

    /// `arn:aws:ecs:REGION:ACCOUNT` of cluster `c`.
    fn prefix(&self, c: usize) -> String {
        let (region, account) = &self.places[c];
        format!("arn:aws:ecs:{region}:{account}")
    }

    fn cluster_arn(&self, c: usize) -> String {
        format!("{}:cluster/{}", self.prefix(c), self.clusters[c])
    }

    fn new_task(&mut self, cluster: usize, now: i64) -> SimTask {
        let family = self.rng.usize(..FAMILIES.len());
        self.new_task_of(cluster, family, now)
    }

    /// A new PENDING task of `family`; a service's runs its PRIMARY deployment.
    fn new_task_of(&mut self, cluster: usize, family: usize, now: i64) -> SimTask {
        let fargate = self.rng.f64() < 0.2 || self.config.instances_per_cluster == 0;
        let instance = (!fargate).then(|| {
            cluster * self.config.instances_per_cluster
                + self.rng.usize(..self.config.instances_per_cluster)
        });
        let (revision, deployment) = match self.service_of(cluster, family) {
            Some(s) => {
                let d = self.services[s].primary();
                (d.revision, Some(d.id.clone()))
            }
            None => (3 + family as u64, None),
        };
        SimTask {
            arn: format!(
                "{}:task/{}/{}",
                self.prefix(cluster),
                self.clusters[cluster],
                hex(&mut self.rng, 32)
            ),
            cluster,
            instance,
            family,
            revision,
            deployment,
            version: 1,
            last_status: "PENDING",
            desired_status: "RUNNING",
            created_ms: now,
            started_ms: None,
            stopped_ms: None,
            crashed: false,
        }
    }

    /// The EventBridge JSON of task `t`'s current state.
    fn task_event(&mut self, t: usize) -> String {
        let task = &self.tasks[t];
        let (family, kind) = FAMILIES[task.family];
        let cluster_arn = self.cluster_arn(task.cluster);
        let prefix = self.prefix(task.cluster);
        let (region, account) = &self.places[task.cluster];
        let mut detail = json!({
            "clusterArn": cluster_arn,
            "taskArn": task.arn,
            "taskDefinitionArn": format!("{prefix}:task-definition/{family}:{}", task.revision),
            "lastStatus": task.last_status,
            "desiredStatus": task.desired_status,
            "version": task.version,
            "group": format!("{kind}:{family}"),
            "startedBy": task.deployment.clone().unwrap_or_else(|| "events-rule/sim".to_owned()),
            "cpu": "256",
            "memory": "512",
            "availabilityZone": format!("{region}{}", ["a", "b", "c"][task.cluster % 3]),
            "createdAt": format_ms(task.created_ms),
            "updatedAt": format_ms(now_ms()),
            "containers": [{
                "containerArn": format!("{}/{}", task.arn.replace(":task/", ":container/"), family),
                "taskArn": task.arn,
                "name": family,
                "image": format!("{account}.dkr.ecr.{region}.amazonaws.com/{family}:1"),
                "lastStatus": task.last_status,
            }],
            "overrides": {"containerOverrides": [{"name": family}]},
        });
        if let Some(i) = task.instance {
            detail["containerInstanceArn"] = json!(self.instances[i].arn);
            detail["launchType"] = json!("EC2");
            if task.last_status == "RUNNING" {
                detail["containers"][0]["networkBindings"] = json!([{
                    "bindIP": "0.0.0.0", "containerPort": 8080,
                    "hostPort": 32768 + (t % 1000), "protocol": "tcp"}]);
            }
        } else {
            detail["launchType"] = json!("FARGATE");
            detail["platformVersion"] = json!("1.4.0");
            // awsvpc: the task's own interface, on loopback (nothing here
            // may send traffic off this machine, Prometheus included).
            detail["attachments"] = json!([{
                "id": format!("eni-attach-{t}"), "type": "ElasticNetworkInterface", "status": "ATTACHED",
                "details": [{"name": "privateIPv4Address", "value": format!("127.0.{}.{}", 1 + t / 250, 1 + t % 250)}],
            }]);
        }
        if let Some(s) = task.started_ms {
            detail["startedAt"] = json!(format_ms(s));
        }
        if let Some(s) = task.stopped_ms {
            detail["stoppedAt"] = json!(format_ms(s));
            if task.crashed {
                detail["stoppedReason"] = json!("Essential container in task exited");
                detail["stopCode"] = json!("EssentialContainerExited");
                detail["containers"][0]["exitCode"] = json!(1);
                detail["containers"][0]["reason"] = json!("Error: listen EADDRINUSE");
            } else {
                detail["stoppedReason"] =
                    json!("Scaling activity initiated by (deployment ecs-svc)");
                detail["stopCode"] = json!("ServiceSchedulerInitiated");
                detail["containers"][0]["exitCode"] = json!(0);
            }
        }
        self.envelope("ECS Task State Change", &task.arn.clone(), detail)
    }

    /// The EventBridge JSON of instance `i`'s current state.
    fn instance_event(&mut self, i: usize) -> String {
        let inst = &self.instances[i];
        let running = self
            .tasks_of(inst.cluster)
            .filter(|t| t.instance == Some(i) && t.last_status == "RUNNING")
            .count() as i64;
        let detail = json!({
            "clusterArn": self.cluster_arn(inst.cluster),
            "containerInstanceArn": inst.arn,
            "ec2InstanceId": inst.ec2_id,
            "status": inst.status,
            "agentConnected": inst.agent_connected,
            "version": inst.version,
            "runningTasksCount": running,
            "pendingTasksCount": 0,
            "registeredAt": format_ms(inst.registered_ms),
            "updatedAt": format_ms(now_ms()),
            "attributes": [
                {"name": "ecs.os-type", "value": "linux"},
                {"name": "ecs.instance-type", "value": "m6i.large"},
                {"name": "ecs.capability.execution-role-awslogs"},
                {"name": crate::model::PRIVATE_IP_ATTRIBUTE, "value": format!("127.1.{}.{}", 1 + i / 250, 1 + i % 250)},
            ],
            "registeredResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 7680},
                {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
            ],
            "remainingResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 2048 - 256 * running},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 7680 - 512 * running},
                {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
            ],
            "versionInfo": {"agentVersion": "1.88.0", "agentHash": "4e2c1b9", "dockerVersion": "DockerVersion: 25.0.6"},
        });
        let arn = inst.arn.clone();
        self.envelope("ECS Container Instance State Change", &arn, detail)
    }

    /// An event about `arn`, from its account and region.
    fn envelope(&mut self, detail_type: &str, arn: &str, detail: Value) -> String {
        let (region, account) = crate::arn::region_and_account(arn).unwrap_or_default();
        json!({
            "version": "0",
            "id": hex(&mut self.rng, 32),
            "detail-type": detail_type,
            "source": "aws.ecs",
            "account": account,
            "time": format_ms(now_ms()),
            "region": region,
            "resources": [arn],
            "detail": detail,
        })
        .to_string()
    }

    /// One change of the simulated world, as the event it produces.
    fn step(&mut self) -> String {
        let now = now_ms();
        if !self.services.is_empty() && (self.rng.f64() < ROLLOUT_START_CHANCE) {
            let s = self.rng.usize(..self.services.len());
            if !self.services[s].rolling() {
                return self.start_rollout(s, now);
            }
        }
        let rolling: Vec<usize> = (0..self.services.len())
            .filter(|&s| {
                let svc = &self.services[s];
                svc.rolling() && self.batch >= svc.stepped + ROLLOUT_BATCHES
            })
            .collect();
        if !rolling.is_empty() && (self.rng.f64() < 0.5) {
            let s = rolling[self.rng.usize(..rolling.len())];
            return self.advance_rollout(s, now);
        }
        if self.tasks.is_empty() || (self.rng.f64() < 0.1) {
            if let Some(i) =
                (!self.instances.is_empty()).then(|| self.rng.usize(..self.instances.len()))
            {
                let inst = &mut self.instances[i];
                inst.version += 1;
                if self.rng.f64() < 0.05 {
                    inst.agent_connected = !inst.agent_connected;
                }
                return self.instance_event(i);
            }
        }
        let t = self.rng.usize(..self.tasks.len());
        let task = &mut self.tasks[t];
        task.version += 1;
        match task.last_status {
            "PENDING" => {
                task.last_status = "RUNNING";
                task.started_ms = Some(now);
            }
            "RUNNING" => {
                task.last_status = "STOPPING";
                task.desired_status = "STOPPED";
            }
            "STOPPING" => {
                task.last_status = "STOPPED";
                task.stopped_ms = Some(now);
            }
            _ => {
                // STOPPED: ECS forgets it; a replacement starts in its place.
                let (cluster, family) = (self.tasks[t].cluster, self.tasks[t].family);
                let replacement = self.new_task_of(cluster, family, now);
                self.replace_task(t, replacement);
            }
        }
        self.task_event(t)
    }

    /// Starts a rollout of the next revision of service `s`.
    fn start_rollout(&mut self, s: usize, now: i64) -> String {
        let id = self.deployment_id();
        let fails = self.rng.f64() < 0.15;
        let failing_in = fails.then_some(FAILED_TASKS);
        let svc = &mut self.services[s];
        let revision = svc.primary().revision + 1;
        svc.deployments.truncate(1);
        svc.deployments[0].rollout = "COMPLETED";
        svc.deployments.insert(
            0,
            SimDeployment {
                reason: format!("ECS deployment {id} in progress."),
                id,
                revision,
                rollout: "IN_PROGRESS",
                created_ms: now,
                updated_ms: now,
            },
        );
        svc.failing_in = failing_in;
        svc.stepped = self.batch;
        self.service_event(s, now, "SERVICE_DEPLOYMENT_IN_PROGRESS")
    }

    /// One step of service `s`'s rollout: a task moves on, or the rollout
    /// ends (COMPLETED, or FAILED when it was going to).
    fn advance_rollout(&mut self, s: usize, now: i64) -> String {
        self.services[s].stepped = self.batch;
        if let Some(left) = self.services[s].failing_in {
            if left == 0 {
                let svc = &mut self.services[s];
                svc.failing_in = None;
                svc.deployments[0].rollout = "FAILED";
                svc.deployments[0].reason =
                    "ECS deployment circuit breaker: tasks failed to start.".to_owned();
                svc.deployments[0].updated_ms = now;
                return self.service_event(s, now, "SERVICE_DEPLOYMENT_FAILED");
            }
        }
        let (cluster, family) = (self.services[s].cluster, self.services[s].family);
        let revision = self.services[s].primary().revision;
        // The cluster's tasks, in the order of `tasks`.
        let of_c = self.tasks_of.get(cluster).map_or(&[][..], Vec::as_slice);
        let find = |want: &dyn Fn(&SimTask) -> bool| {
            of_c.iter()
                .copied()
                .find(|&t| self.tasks[t].family == family && want(&self.tasks[t]))
        };
        // A rollout that is going to fail crash-loops its new tasks: each
        // starts, exits 1, and is replaced.
        let failing = self.services[s].failing_in.is_some();
        let next = find(&|t| t.revision == revision && t.last_status == "PENDING")
            .or_else(|| {
                let new = |t: &SimTask| t.revision == revision && t.last_status != "PENDING";
                failing.then(|| find(&new)).flatten()
            })
            .or_else(|| find(&|t| t.revision != revision));
        let Some(t) = next else {
            let svc = &mut self.services[s];
            let id = svc.primary().id.clone();
            svc.deployments.truncate(1);
            svc.deployments[0].rollout = "COMPLETED";
            svc.deployments[0].reason = format!("ECS deployment {id} completed.");
            svc.deployments[0].updated_ms = now;
            return self.service_event(s, now, "SERVICE_DEPLOYMENT_COMPLETED");
        };
        let task = &mut self.tasks[t];
        task.version += 1;
        match task.last_status {
            "PENDING" if task.revision == revision => {
                task.last_status = "RUNNING";
                task.started_ms = Some(now);
            }
            "RUNNING" if failing && task.revision == revision => {
                task.last_status = "STOPPED";
                task.desired_status = "STOPPED";
                task.stopped_ms = Some(now);
                task.crashed = true;
                if let Some(left) = self.services[s].failing_in.as_mut() {
                    *left = left.saturating_sub(1);
                }
            }
            "PENDING" | "RUNNING" => {
                task.last_status = "STOPPING";
                task.desired_status = "STOPPED";
            }
            "STOPPING" => {
                task.last_status = "STOPPED";
                task.stopped_ms = Some(now);
            }
            _ => {
                let replacement = self.new_task_of(cluster, family, now);
                self.replace_task(t, replacement);
            }
        }
        self.task_event(t)
    }

    /// Records a deployment change of service `s` and returns its
    /// `ECS Deployment State Change` event.
    fn service_event(&mut self, s: usize, now: i64, name: &str) -> String {
        let id = hex(&mut self.rng, 32);
        let svc = &mut self.services[s];
        let d = svc.primary().clone();
        let service_name = FAMILIES[svc.family].0;
        let message = match name {
            "SERVICE_DEPLOYMENT_COMPLETED" => {
                format!("(service {service_name}) has reached a steady state.")
            }
            "SERVICE_DEPLOYMENT_FAILED" => format!(
                "(service {service_name}) (deployment {}) deployment failed: tasks failed to start.",
                d.id
            ),
            _ => format!(
                "(service {service_name}) has started a deployment of revision {}.",
                d.revision
            ),
        };
        svc.events.push_front((id, now, message));
        svc.events.truncate(MAX_SERVICE_EVENTS);
        let arn = svc.arn.clone();
        let detail = json!({
            "eventType": if name == "SERVICE_DEPLOYMENT_FAILED" { "ERROR" } else { "INFO" },
            "eventName": name,
            "deploymentId": d.id,
            "updatedAt": format_ms(now),
            "reason": d.reason,
        });
        self.envelope(
            crate::decoder::decode::DEPLOYMENT_STATE_CHANGE,
            &arn,
            detail,
        )
    }

    /// The entry a `DescribeServices` of `service` (name or ARN) in cluster
    /// `c` returns now, if it exists.
    pub fn service_entry(&self, c: usize, service: &str) -> Option<Entry> {
        let name = service.rsplit('/').next().unwrap_or(service);
        let s = self
            .services
            .iter()
            .position(|s| s.cluster == c && FAMILIES[s.family].0 == name)?;
        let svc = &self.services[s];
        let ours: Vec<&SimTask> = self
            .tasks_of(c)
            .filter(|t| t.family == svc.family && t.desired_status == "RUNNING")
            .collect();
        let count = |rev: Option<u64>, status: &str| {
            ours.iter()
                .filter(|t| rev.is_none_or(|r| t.revision == r) && t.last_status == status)
                .count() as i64
        };
        let family = FAMILIES[svc.family].0;
        let prefix = self.prefix(c);
        let td = |rev: u64| format!("{prefix}:task-definition/{family}:{rev}");
        let deployments = svc
            .deployments
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let desired = ours.iter().filter(|t| t.revision == d.revision).count() as i64;
                Deployment {
                    id: Some(d.id.clone()),
                    status: Some(if i == 0 { "PRIMARY" } else { "ACTIVE" }.to_owned()),
                    task_definition_arn: Some(td(d.revision)),
                    desired_count: Some(if i == 0 { ours.len() as i64 } else { desired }),
                    running_count: Some(count(Some(d.revision), "RUNNING")),
                    pending_count: Some(count(Some(d.revision), "PENDING")),
                    failed_tasks: Some(i64::from(d.rollout == "FAILED") * i64::from(FAILED_TASKS)),
                    rollout_state: Some(d.rollout.to_owned()),
                    rollout_state_reason: Some(d.reason.clone()),
                    launch_type: Some("EC2".to_owned()),
                    created_at: Some(format_ms(d.created_ms)),
                    updated_at: Some(format_ms(d.updated_ms)),
                }
            })
            .collect();
        let service = Service {
            service_arn: svc.arn.clone(),
            service_name: name.to_owned(),
            cluster_arn: self.cluster_arn(c),
            status: "ACTIVE".to_owned(),
            desired_count: Some(ours.len() as i64),
            running_count: Some(count(None, "RUNNING")),
            pending_count: Some(count(None, "PENDING")),
            task_definition_arn: Some(td(svc.primary().revision)),
            launch_type: Some("EC2".to_owned()),
            platform_version: None,
            scheduling_strategy: Some("REPLICA".to_owned()),
            created_at: Some(format_ms(svc.created_ms)),
            deployments,
            events: svc
                .events
                .iter()
                .map(|(id, at, message)| ServiceEvent {
                    id: Some(id.clone()),
                    created_at: Some(format_ms(*at)),
                    message: Some(message.clone()),
                })
                .collect(),
            load_balancers: vec![LoadBalancer {
                target_group_arn: Some(format!(
                    "arn:aws:elasticloadbalancing:{}:{}:targetgroup/{}-{name}/{}",
                    self.places[c].0,
                    self.places[c].1,
                    self.clusters[c],
                    1000 + s
                )),
                load_balancer_name: None,
                container_name: Some(name.to_owned()),
                container_port: Some(8080),
            }],
            updated_at: Some(format_ms(now_ms())),
        };
        Entry::from_service(&service).ok()
    }

    /// The ARNs of cluster `c`'s services.
    pub fn service_arns(&self, c: usize) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| s.cluster == c)
            .map(|s| s.arn.clone())
            .collect()
    }

    fn message(&mut self, body: String) -> RawMessage {
        self.next_id += 1;
        RawMessage::new(format!("sim-{}", self.next_id), body)
    }

    /// The next batch of messages: up to `max` of the initial state while it
    /// lasts, then `churn` changes, with the configured distortions, plus the
    /// late events that are due.
    pub fn next_batch(&mut self, churn: usize, max: usize) -> Vec<RawMessage> {
        self.batch += 1;
        let mut bodies = Vec::new();
        if !self.initial.is_empty() {
            let n = self.initial.len().min(max);
            bodies.extend(self.initial.drain(..n));
        } else {
            for _ in 0..churn.min(max) {
                let body = self.step();
                bodies.push(body);
            }
        }
        let mut out = Vec::with_capacity(bodies.len());
        for body in bodies {
            if self.rng.f64() < self.config.drop_rate {
                continue;
            }
            if self.rng.f64() < self.config.reorder_rate {
                let due = self.batch + 1 + self.rng.usize(..5) as u64;
                self.late.push((due, body));
                continue;
            }
            if self.rng.f64() < self.config.duplicate_rate {
                let dup = self.message(body.clone());
                out.push(dup);
            }
            let body = if self.rng.f64() < self.config.malformed_rate {
                body[..body.len() / 2].to_owned()
            } else {
                body
            };
            let m = self.message(body);
            out.push(m);
        }
        let batch = self.batch;
        let (due, late): (Vec<_>, Vec<_>) = self.late.drain(..).partition(|(d, _)| *d <= batch);
        self.late = late;
        for (_, body) in due {
            let m = self.message(body);
            out.push(m);
        }
        out
    }

    /// The entry a Describe of task `arn` returns now, if the task exists.
    pub fn task_entry(&mut self, arn: &str) -> Option<Entry> {
        let i = *self.task_at.get(arn)?;
        let body = self.task_event(i);
        match crate::decoder::decode::decode(&body) {
            Ok(crate::decoder::decode::Decoded::Entity(e)) => Some(e),
            _ => None,
        }
    }

    /// The entry a Describe of container instance `arn` returns now.
    pub fn instance_entry(&mut self, arn: &str) -> Option<Entry> {
        let i = *self.instance_at.get(arn)?;
        let body = self.instance_event(i);
        match crate::decoder::decode::decode(&body) {
            Ok(crate::decoder::decode::Decoded::Entity(e)) => Some(e),
            _ => None,
        }
    }

    /// The ARN of simulated cluster `c`.
    pub fn cluster_arn_of(&self, c: usize) -> String {
        self.cluster_arn(c)
    }

    /// Whether the initial state has been delivered and no late event waits.
    pub fn settled(&self) -> bool {
        self.initial.is_empty() && self.late.is_empty()
    }
}

/// `len` random lowercase hex digits (ECS ids).
fn hex(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.u32(..16), 16).unwrap_or('0'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::decode::{decode, Decoded};

    #[test]
    fn every_account_and_region_has_the_clusters_and_events_say_where() {
        let mut sim = Simulator::new(Config {
            accounts: 2,
            regions: vec!["us-west-2".into(), "eu-west-1".into()],
            clusters: 2,
            instances_per_cluster: 1,
            tasks_per_instance: 1,
            ..Config::default()
        });
        let arns: std::collections::BTreeSet<String> = (0..sim.clusters().len())
            .map(|c| sim.cluster_arn_of(c))
            .collect();
        assert_eq!(
            arns.len(),
            8,
            "2 accounts x 2 regions x 2 clusters: {arns:?}"
        );
        for (region, account) in [
            ("us-west-2", "123456789012"),
            ("eu-west-1", "123456789012"),
            ("us-west-2", "123456789013"),
            ("eu-west-1", "123456789013"),
        ] {
            let here = arns
                .iter()
                .filter(|a| crate::arn::region_and_account(a) == Some((region, account)));
            assert_eq!(here.count(), 2, "{region} {account}");
        }
        // Each event's envelope is the account and region of its ARNs.
        let mut seen = 0;
        while !sim.settled() {
            for m in sim.next_batch(0, 100) {
                let v: Value = serde_json::from_str(&m.body).unwrap();
                let cluster = v["detail"]["clusterArn"].as_str().unwrap();
                let (region, account) = crate::arn::region_and_account(cluster).unwrap();
                assert_eq!(
                    (v["region"].as_str(), v["account"].as_str()),
                    (Some(region), Some(account))
                );
                assert!(v["detail"]["taskDefinitionArn"]
                    .as_str()
                    .is_none_or(|td| td.contains(&format!(":{region}:{account}:"))));
                seen += 1;
            }
        }
        assert!(seen >= 16, "{seen} events");
        let mut problems = Vec::new();
        Config {
            accounts: 0,
            regions: vec!["moon".into()],
            ..Config::default()
        }
        .check(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn initial_state_has_the_configured_size_and_decodes() {
        let mut sim = Simulator::new(Config {
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            ..Config::default()
        });
        assert_eq!(sim.instances().len(), 30);
        assert_eq!(sim.tasks().len(), 240);
        let mut n = 0;
        while !sim.settled() {
            for m in sim.next_batch(0, 100) {
                assert!(
                    matches!(decode(&m.body), Ok(Decoded::Entity(_))),
                    "{}",
                    m.body
                );
                n += 1;
            }
        }
        assert_eq!(n, 270);
        assert!(
            sim.tasks().iter().any(|t| t.instance.is_none()),
            "some Fargate tasks"
        );
        assert!(sim.clusters().iter().any(|c| c.starts_with('9')));
    }

    #[test]
    fn same_seed_same_world_and_versions_grow() {
        let run = |seed| {
            let mut sim = Simulator::new(Config {
                seed,
                ..Config::default()
            });
            let mut versions = std::collections::HashMap::new();
            for _ in 0..50 {
                for m in sim.next_batch(20, 500) {
                    if let Ok(Decoded::Entity(e)) = decode(&m.body) {
                        let v = versions.entry(e.arn.clone()).or_insert(0);
                        *v = (*v).max(e.version.unwrap_or(0));
                    }
                }
            }
            let mut arns: Vec<_> = sim
                .tasks()
                .iter()
                .map(|t| (t.arn.clone(), t.version))
                .collect();
            arns.sort();
            (arns, versions.values().max().copied())
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
        assert!(run(7).1 > Some(2));
    }

    #[test]
    fn services_roll_out_and_are_described() {
        let mut sim = Simulator::new(Config {
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            ..Config::default()
        });
        assert_eq!(sim.services().len(), 9, "three per cluster");
        let web = sim.service_entry(0, "web").expect("web is described");
        assert_eq!(web.kind, crate::model::Kind::Service);
        assert_eq!(web.rollout.as_deref(), Some("COMPLETED"));
        assert_eq!(
            sim.service_entry(0, &sim.service_arns(0)[0]).map(|e| e.arn),
            Some(sim.service_arns(0)[0].clone()),
            "by ARN too"
        );
        assert!(sim.service_entry(0, "nope").is_none());
        let (mut started, mut ended, mut service_tasks) = (0, 0, 0);
        for _ in 0..3000 {
            for m in sim.next_batch(20, 500) {
                match decode(&m.body) {
                    Ok(Decoded::Service { detail_type, .. }) => {
                        assert_eq!(detail_type, crate::decoder::decode::DEPLOYMENT_STATE_CHANGE);
                        if m.body.contains("SERVICE_DEPLOYMENT_IN_PROGRESS") {
                            started += 1;
                        } else {
                            ended += 1;
                        }
                    }
                    Ok(Decoded::Entity(e)) => {
                        if e.group
                            .as_deref()
                            .is_some_and(|g| g.starts_with("service:"))
                        {
                            service_tasks += 1;
                            assert!(e.started_by.as_deref().unwrap().starts_with("ecs-svc/"));
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(
            started > 0 && ended > 0,
            "rollouts start ({started}) and end ({ended})"
        );
        assert!(service_tasks > 0);
        let revisions: Vec<u64> = sim
            .services()
            .iter()
            .map(|s| s.primary().revision)
            .collect();
        assert!(
            revisions
                .iter()
                .zip([3, 4, 5].iter().cycle())
                .any(|(r, first)| r > first),
            "some service runs a newer revision: {revisions:?}"
        );
        // A completed rollout left every task of its service on its revision.
        for (i, svc) in sim.services().iter().enumerate() {
            if svc.primary().rollout == "COMPLETED" && svc.deployments.len() == 1 {
                let e = sim.service_entry(svc.cluster, &svc.arn).unwrap();
                let v: serde_json::Value = serde_json::from_str(e.entity.get()).unwrap();
                assert_eq!(v["deployments"].as_array().unwrap().len(), 1, "service {i}");
            }
        }
    }

    #[test]
    fn distortions_duplicate_drop_and_corrupt() {
        let mut sim = Simulator::new(Config {
            duplicate_rate: 0.3,
            malformed_rate: 0.2,
            drop_rate: 0.2,
            ..Config::default()
        });
        let mut bodies = Vec::new();
        for _ in 0..20 {
            bodies.extend(sim.next_batch(10, 500).into_iter().map(|m| m.body));
        }
        let bad = bodies.iter().filter(|b| decode(b).is_err()).count();
        let mut sorted = bodies.clone();
        sorted.sort();
        sorted.dedup();
        assert!(bad > 0, "some malformed");
        assert!(sorted.len() < bodies.len(), "some duplicated");
    }
}
