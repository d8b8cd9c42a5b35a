//! ECS ARNs: parsing and validation of cluster, task, container-instance and service ARNs.
//!
//! Accepts every partition (`aws`, `aws-cn`, `aws-us-gov`, …) and both resource
//! formats: short (`task/ID`) and long (`task/CLUSTER/ID`). Entities are keyed by
//! their full ARN, so equal cluster names in two accounts never collide.

use std::fmt;

/// The kind of ECS resource an ARN names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cluster,
    Task,
    ContainerInstance,
    Service,
}

impl Resource {
    fn prefix(self) -> &'static str {
        match self {
            Resource::Cluster => "cluster",
            Resource::Task => "task",
            Resource::ContainerInstance => "container-instance",
            Resource::Service => "service",
        }
    }
}

/// A parsed ECS ARN, borrowing from the string it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: Resource,
    /// The cluster name: the resource itself for a cluster ARN, the middle part
    /// of a long-format task or instance ARN, `None` for a short-format one.
    pub cluster: Option<&'a str>,
    /// The last path element (the ID; the name for a cluster).
    pub id: &'a str,
}

/// Why a string is not the ARN that was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid ECS {expected} ARN")]
pub struct Error {
    pub expected: &'static str,
}

/// ECS's own rule for cluster names: 1–255 letters, digits, `-` and `_`.
pub fn is_valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_valid_label(s: &str, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty())
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl<'a> Arn<'a> {
    /// Parses `s` as an ECS ARN naming a `resource`.
    pub fn parse(s: &'a str, resource: Resource) -> Result<Arn<'a>, Error> {
        let err = Error {
            expected: resource.prefix(),
        };
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(err);
        };
        if !partition.starts_with("aws")
            || !is_valid_label(partition, false)
            || !is_valid_label(region, false)
            || account.is_empty()
            || account.len() > 32
            || !account.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err);
        }
        let Some(path) = rest
            .strip_prefix(resource.prefix())
            .and_then(|p| p.strip_prefix('/'))
        else {
            return Err(err);
        };
        let (cluster, id) = match (resource, path.split_once('/')) {
            (Resource::Cluster, None) if is_valid_cluster_name(path) => (Some(path), path),
            (Resource::Cluster, _) => return Err(err),
            (_, None) if is_valid_id(path) => (None, path),
            (_, Some((c, id))) if is_valid_cluster_name(c) && is_valid_id(id) => (Some(c), id),
            _ => return Err(err),
        };
        Ok(Arn {
            partition,
            region,
            account,
            resource,
            cluster,
            id,
        })
    }

    /// The ARN of the cluster named `name` in this ARN's partition, region and account.
    pub fn cluster_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:ecs:{}:{}:cluster/{}",
            self.partition, self.region, self.account, name
        )
    }
}

impl fmt::Display for Arn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:ecs:{}:{}:{}/",
            self.partition,
            self.region,
            self.account,
            self.resource.prefix()
        )?;
        match (self.resource, self.cluster) {
            (Resource::Cluster, _) | (_, None) => write!(f, "{}", self.id),
            (_, Some(c)) => write!(f, "{c}/{}", self.id),
        }
    }
}

/// The cluster name of a cluster ARN, or `None` when `s` is not one.
pub fn cluster_name(cluster_arn: &str) -> Option<&str> {
    Arn::parse(cluster_arn, Resource::Cluster)
        .ok()
        .map(|a| a.id)
}

/// The region and account of any ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`).
pub fn region_and_account(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some(_), Some(region), Some(account)) => Some((region, account)),
        _ => None,
    }
}

/// An AWS account id: 12 digits.
pub fn is_valid_account(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// A region name as AWS writes them: lowercase letters in two or more parts
/// joined by `-`, ending in a number (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-4`).
pub fn is_valid_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let number = parts
        .last()
        .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()));
    let words = &parts[..parts.len().saturating_sub(1)];
    name.len() <= 32
        && number
        && words.len() >= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// A cluster given by a client: a name or a full cluster ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRef {
    Name(String),
    Arn(String),
}

impl ClusterRef {
    /// Parses a cluster name or cluster ARN; `None` when it is neither.
    pub fn parse(s: &str) -> Option<ClusterRef> {
        if is_valid_cluster_name(s) {
            Some(ClusterRef::Name(s.to_owned()))
        } else if Arn::parse(s, Resource::Cluster).is_ok() {
            Some(ClusterRef::Arn(s.to_owned()))
        } else {
            None
        }
    }

    /// Whether the entity's `cluster_arn` is this cluster.
    pub fn matches(&self, cluster_arn: &str) -> bool {
        match self {
            ClusterRef::Arn(a) => a == cluster_arn,
            ClusterRef::Name(n) => cluster_name(cluster_arn) == Some(n.as_str()),
        }
    }

    /// The full cluster ARN this reference means for an entity with ARN `entity`.
    pub fn resolve(&self, entity: &Arn<'_>) -> String {
        match self {
            ClusterRef::Arn(a) => a.clone(),
            ClusterRef::Name(n) => entity.cluster_arn(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_regions_are_read_from_arns_and_checked() {
        let arn = "arn:aws-us-gov:ecs:us-gov-west-1:111122223333:task/prod/7c1e";
        assert_eq!(
            region_and_account(arn),
            Some(("us-gov-west-1", "111122223333"))
        );
        assert_eq!(region_and_account("arn:aws:ecs"), None);
        assert_eq!(region_and_account("task/prod/7c1e"), None);
        assert!(is_valid_account("111122223333"));
        for bad in ["11112222333", "1111222233334", "11112222333a", ""] {
            assert!(!is_valid_account(bad), "{bad}");
        }
        for good in ["us-east-1", "eu-west-2", "us-gov-west-1", "ap-southeast-4"] {
            assert!(is_valid_region(good), "{good}");
        }
        for bad in [
            "us-east",
            "US-EAST-1",
            "east-1",
            "us-east-1a",
            "us--east-1",
            "",
            "us-east-123",
        ] {
            assert!(!is_valid_region(bad), "{bad}");
        }
    }

    #[test]
    fn parses_long_and_short_task_arns_in_every_partition() {
        let long = "arn:aws:ecs:us-west-2:111122223333:task/prod-web/7c1e9a0b";
        let a = Arn::parse(long, Resource::Task).unwrap();
        assert_eq!(a.cluster, Some("prod-web"));
        assert_eq!(a.id, "7c1e9a0b");
        assert_eq!(a.to_string(), long);

        let short = "arn:aws-cn:ecs:cn-north-1:444455556666:task/5d4c3b2a-1f0e";
        let a = Arn::parse(short, Resource::Task).unwrap();
        assert_eq!(a.cluster, None);
        assert_eq!(a.partition, "aws-cn");
        assert_eq!(a.to_string(), short);

        let gov = "arn:aws-us-gov:ecs:us-gov-west-1:1:container-instance/9batch/abc";
        let a = Arn::parse(gov, Resource::ContainerInstance).unwrap();
        assert_eq!(a.cluster, Some("9batch"));
        assert_eq!(
            a.cluster_arn("9batch"),
            "arn:aws-us-gov:ecs:us-gov-west-1:1:cluster/9batch"
        );
    }

    #[test]
    fn rejects_malformed_arns() {
        for bad in [
            "",
            "arn",
            "arn:aws:ecs:us-west-2:111:task/",
            "arn:aws:ecs:us-west-2:111:cluster/a/b",
            "arn:aws:s3:us-west-2:111:task/x",
            "arn:aws:ecs:us-west-2:abc:task/x",
            "arn:aws:ecs:us-west-2:111:task/a/b/c",
            "arn:aws:ecs:us-west-2:111:container-instance/x",
            "arn:aws:ecs:us-west-2:111:task/bad name/x",
            "arn:gcp:ecs:us-west-2:111:task/x",
        ] {
            let as_task = Arn::parse(bad, Resource::Task);
            let as_cluster = Arn::parse(bad, Resource::Cluster);
            assert!(
                as_task.is_err() || bad.contains("container-instance"),
                "{bad}"
            );
            assert!(as_cluster.is_err(), "{bad}");
        }
        assert!(Arn::parse(
            "arn:aws:ecs:us-west-2:111:task/x",
            Resource::ContainerInstance
        )
        .is_err());
    }

    #[test]
    fn cluster_names_follow_ecs_rules() {
        assert!(is_valid_cluster_name("9batch"));
        assert!(is_valid_cluster_name("a_b-C"));
        assert!(is_valid_cluster_name(&"x".repeat(255)));
        assert!(!is_valid_cluster_name(&"x".repeat(256)));
        assert!(!is_valid_cluster_name(""));
        assert!(!is_valid_cluster_name("a b"));
        assert!(!is_valid_cluster_name("a/b"));
    }

    #[test]
    fn cluster_ref_matches_names_and_arns() {
        let arn = "arn:aws:ecs:us-west-2:111:cluster/prod";
        assert!(ClusterRef::parse("prod").unwrap().matches(arn));
        assert!(ClusterRef::parse(arn).unwrap().matches(arn));
        assert!(!ClusterRef::parse("prod2").unwrap().matches(arn));
        assert!(!ClusterRef::parse("arn:aws:ecs:us-east-1:111:cluster/prod")
            .unwrap()
            .matches(arn));
        assert_eq!(ClusterRef::parse("bad!"), None);
    }
}
