//! Content negotiation of the change streams: which of the formats a stream
//! can be sent as the client's `Accept` header prefers (RFC 9110 §12.5.1:
//! media ranges matched case-insensitively, `q` weights, `type/*`, `*/*`).

/// How a change stream's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-ndjson`: one item per line (the default).
    Ndjson,
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// The NDJSON bytes as `application/octet-stream`, the content type v0.3
    /// answered streams with (clients generated from its swagger ask for it).
    OctetStream,
}

impl Format {
    /// In the server's order of preference, which breaks ties of weight.
    const ALL: [Format; 3] = [Format::Ndjson, Format::Sse, Format::OctetStream];

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Sse => "text/event-stream",
            Format::OctetStream => "application/octet-stream",
        }
    }

    /// The format `accept` (every `Accept` header value) weighs highest; NDJSON
    /// when none is acceptable or nothing was asked for, as a stream is always
    /// sent (a client that accepts none of them gets the default, not a 406).
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str> + Clone) -> Format {
        let mut best = (Format::Ndjson, 0u16);
        for f in Format::ALL {
            let q = weight(f.content_type(), accept.clone());
            if q > best.1 {
                best = (f, q);
            }
        }
        best.0
    }
}

/// The weight (0–1000) that `accept` gives to `media` (`type/subtype`, lower
/// case): the `q` of the most specific range that matches it, 0 if none does.
fn weight<'a>(media: &str, accept: impl IntoIterator<Item = &'a str>) -> u16 {
    let (ty, sub) = media.split_once('/').unwrap_or((media, ""));
    // (specificity, q) of the best range so far: exact 2, type/* 1, */* 0.
    let mut best: Option<(u8, u16)> = None;
    for range in accept.into_iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let Some((rt, rs)) = parts.next().map(str::trim).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let (rt, rs) = (rt.trim(), rs.trim());
        let specificity = if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) {
            2
        } else if rt.eq_ignore_ascii_case(ty) && rs == "*" {
            1
        } else if rt == "*" && rs == "*" {
            0
        } else {
            continue;
        };
        let mut q = Some(1000);
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim());
                }
            }
        }
        // A range with a malformed weight is ignored.
        let Some(q) = q else { continue };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0, |(_, q)| q)
}

/// A `qvalue` (`0`, `0.5`, `1.000`, at most three decimals) in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Format::{self, *};

    fn pick(accept: &[&str]) -> Format {
        Format::negotiate(accept.iter().copied())
    }

    #[test]
    fn picks_what_the_client_weighs_highest() {
        assert_eq!(pick(&[]), Ndjson);
        assert_eq!(pick(&["application/octet-stream"]), OctetStream);
        assert_eq!(pick(&["text/event-stream"]), Sse);
        assert_eq!(pick(&["Text/Event-Stream"]), Sse);
        assert_eq!(pick(&["TEXT/EVENT-STREAM; charset=utf-8"]), Sse);
        assert_eq!(pick(&["application/x-ndjson"]), Ndjson);
        assert_eq!(pick(&["*/*"]), Ndjson);
        assert_eq!(pick(&["text/*"]), Sse);
        assert_eq!(pick(&["application/*"]), Ndjson);
        assert_eq!(pick(&["application/json"]), Ndjson);
        assert_eq!(pick(&["text/html, text/event-stream"]), Sse);
        assert_eq!(pick(&["text/html", "text/event-stream"]), Sse);
    }

    #[test]
    fn weights_decide_and_zero_refuses() {
        assert_eq!(pick(&["text/event-stream;q=0"]), Ndjson);
        assert_eq!(pick(&["text/event-stream; Q=0.0"]), Ndjson);
        assert_eq!(pick(&["text/event-stream;q=0, */*"]), Ndjson);
        assert_eq!(pick(&["*/*;q=0.1, application/octet-stream"]), OctetStream);
        assert_eq!(
            pick(&["application/x-ndjson;q=0.5, text/event-stream;q=0.9"]),
            Sse
        );
        assert_eq!(pick(&["text/*;q=0, */*;q=0.2"]), Ndjson);
        // The most specific range decides, whatever a wider one says.
        assert_eq!(pick(&["text/event-stream;q=0.8, text/*;q=0"]), Sse);
        assert_eq!(pick(&["*/*;q=0, application/octet-stream"]), OctetStream);
        // A malformed weight ignores its range.
        assert_eq!(pick(&["text/event-stream;q=2"]), Ndjson);
        assert_eq!(pick(&["text/event-stream;q=0.0001"]), Ndjson);
        assert_eq!(
            pick(&["text/event-stream;q=abc, application/octet-stream"]),
            OctetStream
        );
        assert_eq!(pick(&["garbage, ;;, /"]), Ndjson);
    }
}
