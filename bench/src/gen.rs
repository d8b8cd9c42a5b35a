//! The benchmark's events: the fixtures' real shapes (`task-running-ec2`,
//! `instance-active`), with cluster, ARNs, version, status and `startedBy`
//! varied. Tasks are spread evenly over the clusters, each on one of its
//! cluster's instances.

const TASK: &str = r#"{"version":"0","id":"6f1c2d3e-4a5b-4c6d-8e9f-{E}","detail-type":"ECS Task State Change","source":"aws.ecs","account":"111122223333","time":"2026-11-20T10:01:02Z","region":"us-west-2","resources":["arn:aws:ecs:us-west-2:111122223333:task/{C}/{T}"],"detail":{"clusterArn":"arn:aws:ecs:us-west-2:111122223333:cluster/{C}","taskArn":"arn:aws:ecs:us-west-2:111122223333:task/{C}/{T}","containerInstanceArn":"arn:aws:ecs:us-west-2:111122223333:container-instance/{C}/{I}","taskDefinitionArn":"arn:aws:ecs:us-west-2:111122223333:task-definition/web:42","lastStatus":"{S}","desiredStatus":"RUNNING","version":{V},"launchType":"EC2","group":"service:web","startedBy":"{B}","availabilityZone":"us-west-2b","cpu":"512","memory":"1024","connectivity":"CONNECTED","connectivityAt":"2026-11-20T10:00:48.120Z","createdAt":"2026-11-20T10:00:47.003Z","pullStartedAt":"2026-11-20T10:00:49.511Z","pullStoppedAt":"2026-11-20T10:00:58.204Z","startedAt":"2026-11-20T10:01:01.877Z","updatedAt":"2026-11-20T10:01:01.877Z","containers":[{"containerArn":"arn:aws:ecs:us-west-2:111122223333:container/{C}/{T}/0e1d2c3b-4a59-4867-9a7b-c6d5e4f3a2b1","taskArn":"arn:aws:ecs:us-west-2:111122223333:task/{C}/{T}","name":"web","image":"111122223333.dkr.ecr.us-west-2.amazonaws.com/web:2026.11.3","imageDigest":"sha256:5f0e7c3a9b1d2e4f6a8c0b2d4e6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f","runtimeId":"9a8b7c6d5e4f3a2b1c0d","lastStatus":"{S}","cpu":"512","memory":"1024","healthStatus":"HEALTHY","networkBindings":[{"bindIP":"0.0.0.0","containerPort":8080,"hostPort":32768,"protocol":"tcp"}]}],"overrides":{"containerOverrides":[{"name":"web","environment":[{"name":"LOG_LEVEL","value":"info"}]}]},"attributes":[{"name":"ecs.cpu-architecture","value":"x86_64"}]}}"#;

const INSTANCE: &str = r#"{"version":"0","id":"2c3d4e5f-6a7b-4c8d-9e0f-{E}","detail-type":"ECS Container Instance State Change","source":"aws.ecs","account":"111122223333","time":"2026-11-20T09:58:20Z","region":"us-west-2","resources":["arn:aws:ecs:us-west-2:111122223333:container-instance/{C}/{I}"],"detail":{"clusterArn":"arn:aws:ecs:us-west-2:111122223333:cluster/{C}","containerInstanceArn":"arn:aws:ecs:us-west-2:111122223333:container-instance/{C}/{I}","ec2InstanceId":"i-0f1e2d3c4b5a69788","status":"ACTIVE","agentConnected":true,"version":{V},"runningTasksCount":1,"pendingTasksCount":0,"registeredAt":"2026-11-18T06:12:09.331Z","updatedAt":"2026-11-20T09:58:19.874Z","accountType":"ec2_instance","attributes":[{"name":"ecs.capability.execution-role-awslogs"},{"name":"ecs.availability-zone","value":"us-west-2b"},{"name":"ecs.instance-type","value":"m6i.large"},{"name":"ecs.os-type","value":"linux"}],"registeredResources":[{"name":"CPU","type":"INTEGER","integerValue":2048},{"name":"MEMORY","type":"INTEGER","integerValue":7680},{"name":"PORTS","type":"STRINGSET","stringSetValue":["22","2375","2376","51678","51679"]},{"name":"PORTS_UDP","type":"STRINGSET","stringSetValue":[]}],"remainingResources":[{"name":"CPU","type":"INTEGER","integerValue":1536},{"name":"MEMORY","type":"INTEGER","integerValue":6656},{"name":"PORTS","type":"STRINGSET","stringSetValue":["22","2375","2376","51678","51679","32768"]},{"name":"PORTS_UDP","type":"STRINGSET","stringSetValue":[]}],"versionInfo":{"agentHash":"4e2c1b9","agentVersion":"1.88.0","dockerVersion":"DockerVersion: 25.0.6"}}}"#;

/// Marks the `startedBy` of the stream phase's changes: `bench-seq-N`.
pub const SEQ_MARK: &str = "\"startedBy\":\"bench-seq-";

/// The shape of the generated state.
#[derive(Clone, Copy)]
pub struct Shape {
    pub clusters: usize,
    pub instances: usize,
    pub tasks: usize,
}

impl Shape {
    pub fn cluster(&self, i: usize) -> String {
        format!("bench-{:02}", i % self.clusters)
    }

    pub fn task_id(&self, t: usize) -> String {
        format!("{:08x}{:024x}", t % self.clusters, t)
    }

    fn instance_id(&self, i: usize) -> String {
        format!(
            "{:08x}{:024x}",
            i % self.clusters,
            0xfeed_0000_0000usize + i
        )
    }

    /// `{cluster}/{taskARN}` as the describe path takes it.
    pub fn describe_path(&self, t: usize) -> String {
        let c = self.cluster(t);
        format!(
            "/v1/tasks/{c}/arn:aws:ecs:us-west-2:111122223333:task/{c}/{}",
            self.task_id(t)
        )
    }

    /// The instance a task runs on: one of its cluster's.
    fn instance_of(&self, t: usize) -> usize {
        let per_cluster = (self.instances / self.clusters).max(1);
        (t % self.clusters) + self.clusters * ((t / self.clusters) % per_cluster)
    }

    pub fn instance_event(&self, i: usize, version: u64) -> String {
        INSTANCE
            .replace("{E}", &format!("{:012x}", i))
            .replace("{C}", &self.cluster(i))
            .replace("{I}", &self.instance_id(i))
            .replace("{V}", &version.to_string())
    }

    pub fn task_event(&self, t: usize, version: u64, status: &str, started_by: &str) -> String {
        TASK.replace("{E}", &format!("{:012x}", t))
            .replace("{C}", &self.cluster(t))
            .replace("{T}", &self.task_id(t))
            .replace("{I}", &self.instance_id(self.instance_of(t)))
            .replace("{V}", &version.to_string())
            .replace("{S}", status)
            .replace("{B}", started_by)
    }

    /// The stream phase's change number `seq`: a newer version of a stored
    /// task (`base` keeps the versions of each run above the last run's).
    pub fn change(&self, base: u64, seq: usize) -> String {
        let t = seq.wrapping_mul(7919) % self.tasks;
        let by = format!("bench-seq-{seq}");
        self.task_event(t, base + seq as u64, "RUNNING", &by)
    }
}

/// Writes `events` lines: every instance, every task as PENDING (version 1),
/// then as many tasks again as RUNNING (version 2) as the count allows.
pub fn write_events(
    shape: &Shape,
    events: usize,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    write_first(shape, "PENDING", out)?;
    let updates = events.saturating_sub(shape.instances + shape.tasks);
    for t in 0..updates {
        let t = t % shape.tasks;
        writeln!(
            out,
            "{}",
            shape.task_event(t, 2, "RUNNING", "ecs-svc/bench")
        )?;
    }
    Ok(())
}

/// Writes every instance, then every task as STOPPED (version 1): the state
/// of a cluster whose stopped tasks are kept (`stopped_task_retention`).
pub fn write_stopped(shape: &Shape, out: &mut impl std::io::Write) -> std::io::Result<()> {
    write_first(shape, "STOPPED", out)
}

/// Every instance, then every task in `status`, all at version 1.
fn write_first(shape: &Shape, status: &str, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for i in 0..shape.instances {
        writeln!(out, "{}", shape.instance_event(i, 1))?;
    }
    for t in 0..shape.tasks {
        writeln!(out, "{}", shape.task_event(t, 1, status, "ecs-svc/bench"))?;
    }
    Ok(())
}

/// Finds the `N` of `bench-seq-N` in stream lines.
pub struct SeqFinder(memchr::memmem::Finder<'static>);

impl SeqFinder {
    pub fn new() -> SeqFinder {
        SeqFinder(memchr::memmem::Finder::new(SEQ_MARK.as_bytes()))
    }

    /// The `N` of a line's `bench-seq-N`, if it has one.
    pub fn seq_of(&self, line: &[u8]) -> Option<usize> {
        let at = self.0.find(line)? + SEQ_MARK.len();
        let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&line[at..at + digits])
            .ok()?
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_are_valid_json_of_the_chosen_shape() {
        let shape = Shape {
            clusters: 3,
            instances: 6,
            tasks: 9,
        };
        let mut out = Vec::new();
        write_events(&shape, 20, &mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 20);
        let task = &lines[6]["detail"];
        assert_eq!(
            task["clusterArn"],
            "arn:aws:ecs:us-west-2:111122223333:cluster/bench-00"
        );
        // A task runs on an instance of its own cluster.
        let inst = task["containerInstanceArn"].as_str().unwrap();
        assert!(inst.contains("container-instance/bench-00/"), "{inst}");
        assert_eq!(lines[19]["detail"]["version"], 2);
        let change = shape.change(1000, 41);
        let finder = SeqFinder::new();
        assert_eq!(finder.seq_of(change.as_bytes()), Some(41));
        assert_eq!(finder.seq_of(b"{\"startedBy\":\"x\"}"), None);
    }
}
