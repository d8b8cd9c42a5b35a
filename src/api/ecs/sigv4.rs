//! AWS Signature Version 4, checked: the signature of a request to `/ecs` is
//! computed again by the AWS SDK's own signer (`aws-sigv4`), over the headers
//! the client signed, with the secret of its access key
//! (`server.ecs_credentials_file`), and compared in constant time. What is
//! left here is reading the `Authorization` header and ECS's answers.

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq as _;

/// How far a request's `X-Amz-Date` may be from this clock, as AWS allows.
pub const MAX_SKEW_MS: i64 = 15 * 60 * 1000;

/// The access keys `/ecs` accepts, each with its secret and, where given,
/// the account it reads.
#[derive(Clone)]
pub struct Credentials(HashMap<String, (String, Option<String>)>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_tuple("Credentials").field(&self.0.len()).finish()
    }
}

impl Credentials {
    /// Reads `ACCESS_KEY_ID SECRET [ACCOUNT]`, one key per line; blank lines
    /// and lines starting with `#` are skipped.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Credentials::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Credentials, String> {
        let mut pairs = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let expected = || format!("line {}: expected ACCESS_KEY_ID SECRET [ACCOUNT]", n + 1);
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some(key), Some(secret), account, None) => {
                    if let Some(a) = account.filter(|a| !actors::arn::is_valid_account(a)) {
                        return Err(format!(
                            "line {}: {a:?} is not an AWS account id of 12 digits",
                            n + 1
                        ));
                    }
                    let account = account.map(str::to_owned);
                    pairs.insert(key.to_owned(), (secret.to_owned(), account));
                }
                _ => return Err(expected()),
            }
        }
        if pairs.is_empty() {
            return Err("the file holds no ACCESS_KEY_ID SECRET pair".into());
        }
        Ok(Credentials(pairs))
    }

    /// The account the access key `key` reads, when its line names one.
    pub fn account_of(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|(_, account)| account.as_deref())
    }
}

/// The access key id and the region of a request's SigV4 credential scope
/// (its `Authorization` header), unchecked; `None` when it has none.
pub fn scope(authorization: &str) -> Option<(&str, &str)> {
    parse_authorization(authorization)
        .ok()
        .map(|a| (a.key, a.region))
}

/// Why a request was refused (403), as ECS names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No signature, or an access key that is not configured.
    UnrecognizedClient(String),
    /// A signature that does not match, is malformed, or is too old.
    InvalidSignature(String),
}

/// What of a request the signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    pub query: &'a str,
    /// Every header, names in any case; repeated names in order.
    pub headers: Vec<(String, &'a [u8])>,
    pub body: &'a [u8],
}

struct Authorization<'a> {
    key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, Denied> {
    let bad =
        |why: &str| Denied::InvalidSignature(format!("Malformed Authorization header: {why}"));
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        Denied::UnrecognizedClient("Only AWS4-HMAC-SHA256 signatures are accepted".into())
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("expected name=value"))?;
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(bad("unknown component")),
        }
    }
    let credential = credential.ok_or_else(|| bad("no Credential"))?;
    let mut scope = credential.splitn(5, '/');
    let (Some(key), Some(date), Some(region), Some(service), Some("aws4_request")) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(bad(
            "Credential is not KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let signature = signature.ok_or_else(|| bad("no Signature"))?;
    Ok(Authorization {
        key,
        date,
        region,
        service,
        signed_headers: signed
            .ok_or_else(|| bad("no SignedHeaders"))?
            .split(';')
            .collect(),
        signature,
    })
}

/// The signature `auth` should carry for `req`, signed at `signed_at_ms`
/// with `secret`: the SDK's signer over exactly the headers the client
/// signed (it adds `X-Amz-Date` itself, from the time).
fn expected_signature(
    req: &Signed<'_>,
    auth: &Authorization<'_>,
    secret: &str,
    signed_at_ms: i64,
) -> Result<String, Denied> {
    let bad = |why: String| Denied::InvalidSignature(format!("Cannot check the signature: {why}"));
    let mut headers = Vec::new();
    for name in auth.signed_headers.iter().filter(|n| **n != "x-amz-date") {
        for (n, v) in req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            let v = std::str::from_utf8(v).map_err(|_| bad(format!("{n} is not UTF-8")))?;
            headers.push((n.as_str(), v));
        }
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        // (The signer would take the host from the URI, which has none.)
        return Err(bad("the request has no Host header".into()));
    }
    let uri = match req.query {
        "" => req.path.to_owned(),
        q => format!("{}?{q}", req.path),
    };
    let identity = aws_credential_types::Credentials::new(
        auth.key,
        secret,
        None,
        None,
        "server.ecs_credentials_file",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::new());
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(signed_at_ms.max(0) as u64);
    let params = SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| bad(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        req.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| bad(e.to_string()))?;
    let signed = sign(signable, &params).map_err(|e| bad(e.to_string()))?;
    Ok(signed.signature().to_owned())
}

/// `YYYYMMDDTHHMMSSZ` in Unix milliseconds.
fn amz_date_ms(d: &str) -> Option<i64> {
    let b = d.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    actors::time::parse_ms(&rfc)
}

/// Checks the signature of `req` against `creds`, at `now_ms`, for `service`.
pub fn verify(
    creds: &Credentials,
    req: &Signed<'_>,
    service: &str,
    now_ms: i64,
) -> Result<(), Denied> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    let Some(authorization) = header("authorization") else {
        return Err(Denied::UnrecognizedClient(
            "Missing Authentication Token: requests to /ecs must be signed (AWS Signature Version 4)"
                .into(),
        ));
    };
    let auth = parse_authorization(authorization)?;
    let Some((secret, _)) = creds.0.get(auth.key) else {
        return Err(Denied::UnrecognizedClient(
            "The security token included in the request is invalid.".into(),
        ));
    };
    let amz_date = header("x-amz-date").ok_or_else(|| {
        Denied::InvalidSignature("Authorization header requires the X-Amz-Date header".into())
    })?;
    let signed_at = amz_date_ms(amz_date)
        .ok_or_else(|| Denied::InvalidSignature(format!("Invalid X-Amz-Date: {amz_date}")))?;
    if !amz_date.starts_with(auth.date) {
        return Err(Denied::InvalidSignature(
            "The credential's date does not match X-Amz-Date".into(),
        ));
    }
    if auth.service != service {
        return Err(Denied::InvalidSignature(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(Denied::InvalidSignature(
            "The Host header must be signed".into(),
        ));
    }
    if (now_ms - signed_at).abs() > MAX_SKEW_MS {
        return Err(Denied::InvalidSignature(format!(
            "Signature expired: {amz_date} is more than 15 minutes from the server's time"
        )));
    }
    let expected = expected_signature(req, &auth, secret, signed_at)?;
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Ok(());
    }
    Err(Denied::InvalidSignature(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    // Signed by botocore's SigV4Auth (the AWS CLI's and boto3's signer).
    const AUTH: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/us-west-2/ecs/aws4_request, \
        SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
        Signature=a21b6cc44d94a034cd64ae6cc25887e8f66ce05700aa20f2d3f0689510a2f16b";
    const BODY: &[u8] = br#"{"cluster":"prod"}"#;

    fn request<'a>(auth: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            method: "POST",
            path: "/ecs/",
            query: "",
            headers: vec![
                ("Host".into(), b"127.0.0.1:3000"),
                (
                    "X-Amz-Target".into(),
                    b"AmazonEC2ContainerServiceV20141113.ListTasks",
                ),
                ("Content-Type".into(), b"application/x-amz-json-1.1"),
                ("X-Amz-Date".into(), b"20261130T162807Z"),
                ("Authorization".into(), auth.as_bytes()),
            ],
            body,
        }
    }

    fn creds(secret: &str) -> Credentials {
        Credentials::parse(&format!("# a comment\n\nAKIDEXAMPLE {secret}\nOTHER x\n")).unwrap()
    }

    #[test]
    fn botocores_signature_verifies_and_any_change_breaks_it() {
        let now = amz_date_ms("20261130T163000Z").unwrap();
        assert_eq!(
            verify(&creds(SECRET), &request(AUTH, BODY), "ecs", now),
            Ok(())
        );
        let bad = |r: Result<(), Denied>| matches!(r, Err(Denied::InvalidSignature(_)));
        assert!(bad(verify(
            &creds("wrong"),
            &request(AUTH, BODY),
            "ecs",
            now
        )));
        assert!(bad(verify(
            &creds(SECRET),
            &request(AUTH, br#"{"cluster":"test"}"#),
            "ecs",
            now
        )));
        let mut moved = request(AUTH, BODY);
        moved.path = "/ecs";
        assert!(bad(verify(&creds(SECRET), &moved, "ecs", now)));
        // Another service's scope, and a clock 20 minutes off.
        assert!(bad(verify(&creds(SECRET), &request(AUTH, BODY), "s3", now)));
        let late = now + 20 * 60 * 1000;
        assert!(bad(verify(
            &creds(SECRET),
            &request(AUTH, BODY),
            "ecs",
            late
        )));
        let unknown = AUTH.replace("AKIDEXAMPLE", "AKIDUNKNOWN");
        assert!(matches!(
            verify(&creds(SECRET), &request(&unknown, BODY), "ecs", now),
            Err(Denied::UnrecognizedClient(_))
        ));
        let mut no_host = request(AUTH, BODY);
        no_host.headers.retain(|(n, _)| n != "Host");
        assert!(bad(verify(&creds(SECRET), &no_host, "ecs", now)));
        let mut unsigned = request(AUTH, BODY);
        unsigned.headers.retain(|(n, _)| n != "Authorization");
        assert!(matches!(
            verify(&creds(SECRET), &unsigned, "ecs", now),
            Err(Denied::UnrecognizedClient(_))
        ));
        assert!(bad(verify(
            &creds(SECRET),
            &request("AWS4-HMAC-SHA256 junk", BODY),
            "ecs",
            now
        )));
    }

    #[test]
    fn credential_files_hold_keys_with_their_secrets_and_accounts() {
        assert!(Credentials::parse("").is_err());
        assert!(Credentials::parse("KEY").is_err());
        assert!(Credentials::parse("KEY SECRET EXTRA").is_err());
        assert!(Credentials::parse("KEY SECRET 222222222222 MORE").is_err());
        let c = Credentials::parse("HOME s1\nMEMBER s2 222222222222\n").unwrap();
        assert_eq!(c.account_of("MEMBER"), Some("222222222222"));
        assert_eq!(c.account_of("HOME"), None);
        assert_eq!(c.account_of("UNKNOWN"), None);
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/ecs/aws4_request, \
                    SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(scope(auth), Some(("AKID", "eu-west-1")));
        assert_eq!(scope("Bearer x"), None);
        assert_eq!(
            format!("{:?}", creds(SECRET)),
            "Credentials(2)",
            "no secret in logs"
        );
    }
}
