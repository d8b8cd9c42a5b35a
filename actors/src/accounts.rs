//! `[[accounts]]`: the AWS accounts and regions one deployment reconciles
//! (accounts.md), and the [`Place`] (account and region) that everything
//! per account and region is keyed by: reconcile managers, request budgets,
//! ECS clients, the ECS-call and unreconciled-event counters.

use crate::arn;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;

/// One `[[accounts]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Account {
    /// The account id, 12 digits.
    pub id: String,
    /// The role the service assumes to read this account's ECS; none: the
    /// ambient credentials (the home account).
    pub role_arn: Option<String>,
    /// Passed to `AssumeRole` when set.
    pub external_id: Option<String>,
    /// The regions reconciled in this account; not empty.
    pub regions: Vec<String>,
}

impl Account {
    /// Every place of this account.
    pub fn places(&self) -> impl Iterator<Item = Place> + '_ {
        self.regions
            .iter()
            .map(|r| Place::new(Some(&self.id), Some(r)))
    }
}

/// What types cannot check about `[[accounts]]`.
pub fn check(accounts: &[Account], problems: &mut Vec<String>) {
    let mut ids = HashSet::new();
    let mut ambient = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        let at = format!("accounts[{i}]");
        if !arn::is_valid_account(&a.id) {
            problems.push(format!(
                "{at}.id: expected an AWS account id of 12 digits, got {:?}",
                a.id
            ));
        } else if !ids.insert(a.id.as_str()) {
            problems.push(format!("{at}.id: account {} is listed twice", a.id));
        }
        if a.regions.is_empty() {
            problems.push(format!("{at}.regions: list at least one region"));
        }
        for r in a.regions.iter().filter(|r| !arn::is_valid_region(r)) {
            problems.push(format!(
                "{at}.regions: {r:?} is not a region name (such as us-east-1)"
            ));
        }
        let mut seen = HashSet::new();
        for r in a.regions.iter().filter(|r| !seen.insert(r.as_str())) {
            problems.push(format!("{at}.regions: {r} is listed twice"));
        }
        match &a.role_arn {
            Some(role) if !is_role_arn(role) => problems.push(format!(
                "{at}.role_arn: expected a role ARN such as \
                 arn:aws:iam::222222222222:role/cluster-state-reader, got {role:?}"
            )),
            Some(_) => {}
            None if a.external_id.is_some() => problems.push(format!(
                "{at}.external_id: only used with role_arn, which is not set"
            )),
            None => ambient.push(a.id.as_str()),
        }
    }
    if ambient.len() > 1 {
        problems.push(format!(
            "accounts: only one account can use the service's own credentials (no role_arn), \
             got {}",
            ambient.join(", ")
        ));
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/NAME`.
fn is_role_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", p, "iam", "", account, role]
        if !p.is_empty() && arn::is_valid_account(account)
            && role.strip_prefix("role/").is_some_and(|n| !n.is_empty()))
}

/// An account and a region. Either may be unknown (`None`): the default
/// deployment reads "the ambient credentials' account and region", which
/// the service does not look up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    pub account: Option<String>,
    pub region: Option<String>,
}

impl Place {
    pub fn new(account: Option<&str>, region: Option<&str>) -> Place {
        Place {
            account: account.map(str::to_owned),
            region: region.map(str::to_owned),
        }
    }

    /// The place of an ARN (`None` parts when it has none).
    pub fn of_arn(a: &str) -> Place {
        match arn::region_and_account(a) {
            Some((region, account)) => Place::new(Some(account), Some(region)),
            None => Place::default(),
        }
    }

    /// The account, or `""` when unknown (a metric label).
    pub fn account_label(&self) -> &str {
        self.account.as_deref().unwrap_or("")
    }

    /// The region, or `""` when unknown (a metric label).
    pub fn region_label(&self) -> &str {
        self.region.as_deref().unwrap_or("")
    }

    /// Whether an entity at `other` (an ARN's place) lies here: unknown
    /// parts of `self` match anything.
    pub fn holds(&self, other: &Place) -> bool {
        let part =
            |mine: &Option<String>, theirs: &Option<String>| mine.is_none() || mine == theirs;
        part(&self.account, &other.account) && part(&self.region, &other.region)
    }

    /// The ARN of cluster `name` here, when both parts are known.
    pub fn cluster_arn(&self, name: &str) -> Option<String> {
        match (&self.account, &self.region) {
            (Some(a), Some(r)) => Some(format!("arn:aws:ecs:{r}:{a}:cluster/{name}")),
            _ => None,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.account.as_deref().unwrap_or("(own account)"),
            self.region.as_deref().unwrap_or("(own region)")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, role: Option<&str>, regions: &[&str]) -> Account {
        Account {
            id: id.into(),
            role_arn: role.map(Into::into),
            external_id: None,
            regions: regions.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn every_problem_of_the_accounts_is_reported() {
        let role = "arn:aws:iam::222222222222:role/cluster-state-reader";
        let mut ok = Vec::new();
        check(
            &[
                account("111111111111", None, &["us-east-1", "eu-west-1"]),
                account("222222222222", Some(role), &["us-east-1"]),
            ],
            &mut ok,
        );
        assert!(ok.is_empty(), "{ok:?}");
        let mut p = Vec::new();
        let mut lone_external_id = account("555555555555", Some(role), &["us-east-1"]);
        lone_external_id.role_arn = None;
        lone_external_id.external_id = Some("css".into());
        check(
            &[
                account("1234", None, &["us-east-1"]),
                account("111111111111", None, &[]),
                account(
                    "111111111111",
                    Some("role/x"),
                    &["moon", "us-east-1", "us-east-1"],
                ),
                lone_external_id,
            ],
            &mut p,
        );
        let all = p.join("\n");
        for needle in [
            "accounts[0].id: expected an AWS account id of 12 digits, got \"1234\"",
            "accounts[1].regions: list at least one region",
            "accounts[2].id: account 111111111111 is listed twice",
            "accounts[2].regions: \"moon\" is not a region name",
            "accounts[2].regions: us-east-1 is listed twice",
            "accounts[2].role_arn: expected a role ARN",
            "accounts[3].external_id: only used with role_arn",
            "accounts: only one account can use the service's own credentials",
        ] {
            assert!(all.contains(needle), "{needle:?} in\n{all}");
        }
    }

    #[test]
    fn a_place_holds_what_its_known_parts_match() {
        let arn = "arn:aws:ecs:eu-west-1:222222222222:cluster/web";
        let here = Place::of_arn(arn);
        assert_eq!(here, Place::new(Some("222222222222"), Some("eu-west-1")));
        assert_eq!(here.cluster_arn("web").as_deref(), Some(arn));
        assert!(Place::default().holds(&here));
        assert!(Place::new(None, Some("eu-west-1")).holds(&here));
        assert!(!Place::new(Some("111111111111"), Some("eu-west-1")).holds(&here));
        assert_eq!(Place::default().cluster_arn("web"), None);
    }
}
