//! The request and reply envelope (§2).
//!
//! Request: `{"method": string, "arguments": object (optional), "tag": int (optional)}`.
//! Reply: `{"arguments": object, "result": string, "tag": int}`, where `arguments` is always
//! present (transmission-rpc reads it unconditionally, even on errors), `result` is
//! `"success"` or an error string, and `tag` is echoed only when the request's was an integer
//! (transmission-remote chooses how to print a reply by its tag). Any body, even one that is
//! not JSON, gets such a reply: `no method name`.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::coerce::Args;

/// The most JSON values (array elements and object members, roughly) a request may hold.
///
/// A 32 MiB body of `[1,1,1,…]` would otherwise parse into 16 million `Value`s, half a
/// gigabyte; real requests hold a few hundred (a torrent-set of every file of a large torrent,
/// a few hundred thousand). The base64 of a .torrent is one value however large.
pub(crate) const MAX_JSON_VALUES: usize = 1 << 20;

/// A parsed request. Parsing never fails: what is missing reads as absent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// `None` for a body that is not a JSON object with a string `method`.
    pub method: Option<String>,
    /// `{}` when missing or not an object (Sonarr and transmission-remote omit it).
    pub args: Args,
    /// An integer `tag` (a bool counts as 1/0, as in Transmission 4.0).
    pub tag: Option<i64>,
}

/// Why a body was not parsed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the request holds more than {MAX_JSON_VALUES} JSON values")]
    TooManyValues,
}

/// An upper bound on the number of values in a JSON text: separators and openings outside
/// strings. Linear, no allocation, and correct for any bytes (invalid JSON is counted too,
/// and then fails to parse anyway).
pub(crate) fn count_values(body: &[u8]) -> usize {
    let mut n = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' | b':' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Parses a request body, whatever its Content-Type says (transmission-remote labels its JSON
/// `application/x-www-form-urlencoded`).
pub(crate) fn parse(body: &[u8]) -> Result<Request, BodyError> {
    if count_values(body) > MAX_JSON_VALUES {
        return Err(BodyError::TooManyValues);
    }
    let Ok(Value::Object(mut top)) = serde_json::from_slice::<Value>(body) else {
        return Ok(Request { method: None, args: Args::new(), tag: None });
    };
    let tag = match top.get("tag") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::Bool(b)) => Some(i64::from(*b)),
        _ => None,
    };
    let method = match top.remove("method") {
        Some(Value::String(m)) => Some(m),
        _ => None,
    };
    let args = match top.remove("arguments") {
        Some(Value::Object(a)) => a,
        _ => Args::new(),
    };
    Ok(Request { method, args, tag })
}

/// A method's answer: its arguments (a JSON object) and `Ok` for `"success"` or the error
/// string.
#[derive(Debug)]
pub(crate) struct Reply {
    pub arguments: Box<RawValue>,
    pub result: Result<(), String>,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

fn raw(args: &impl Serialize) -> Box<RawValue> {
    // Serializing our own argument types cannot fail (no maps with non-string keys, no I/O);
    // should it ever, the client still gets a well-formed reply.
    serde_json::value::to_raw_value(args).unwrap_or_else(|e| {
        tracing::error!("serializing RPC arguments: {e}");
        empty_object()
    })
}

impl Reply {
    /// `{"arguments":{},"result":"success"}`.
    pub fn success() -> Reply {
        Reply { arguments: empty_object(), result: Ok(()) }
    }

    /// Success with these arguments (serialized as an object).
    pub fn with(args: &impl Serialize) -> Reply {
        Reply { arguments: raw(args), result: Ok(()) }
    }

    /// An error with empty arguments.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply { arguments: empty_object(), result: Err(message.into()) }
    }

    /// An error that still carries arguments (free-space's `path`, torrent-get's `torrents`).
    pub fn error_with(message: impl Into<String>, args: &impl Serialize) -> Reply {
        Reply { arguments: raw(args), result: Err(message.into()) }
    }

    /// The result string.
    pub fn result_str(&self) -> &str {
        match &self.result {
            Ok(()) => "success",
            Err(e) => e,
        }
    }

    /// The reply body, keys in byte order as Transmission writes them.
    pub fn to_json(&self, tag: Option<i64>) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            arguments: &'a RawValue,
            result: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            tag: Option<i64>,
        }
        let env = Envelope { arguments: &self.arguments, result: self.result_str(), tag };
        serde_json::to_vec(&env).unwrap_or_else(|_| br#"{"arguments":{},"result":"internal error"}"#.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_clients_send() {
        let r = parse(br#"{"arguments":{"ids":1},"method":"torrent-stop"}"#).unwrap();
        assert_eq!(r.method.as_deref(), Some("torrent-stop"));
        assert_eq!(r.args.get("ids"), Some(&json!(1)));
        assert_eq!(r.tag, None);
        // Sonarr: no arguments at all.
        let r = parse(br#"{"method":"session-get"}"#).unwrap();
        assert!(r.args.is_empty());
        let r = parse(br#"{"method":"session-get","tag":0,"arguments":[1]}"#).unwrap();
        assert_eq!(r.tag, Some(0));
        assert!(r.args.is_empty());
    }

    #[test]
    fn tags_only_integers() {
        let tag = |body: &str| parse(body.as_bytes()).unwrap().tag;
        assert_eq!(tag(r#"{"method":"x","tag":-3}"#), Some(-3));
        assert_eq!(tag(r#"{"method":"x","tag":true}"#), Some(1));
        assert_eq!(tag(r#"{"method":"x","tag":"abc"}"#), None);
        assert_eq!(tag(r#"{"method":"x","tag":1.5}"#), None);
        assert_eq!(tag(r#"{"method":"x","tag":18446744073709551615}"#), None);
    }

    #[test]
    fn garbage_has_no_method() {
        for body in [&b"not json"[..], b"", b"[]", b"{\"method\":5}", b"\xff\xfe", b"{\"method\":\"x\""] {
            assert_eq!(parse(body).unwrap().method, None, "{body:?}");
        }
    }

    #[test]
    fn replies_always_carry_arguments() {
        assert_eq!(Reply::error("no method name").to_json(None), br#"{"arguments":{},"result":"no method name"}"#);
        assert_eq!(Reply::success().to_json(Some(7)), br#"{"arguments":{},"result":"success","tag":7}"#);
        let r = Reply::with(&json!({"b": 1, "a": [2]}));
        assert_eq!(r.to_json(Some(0)), br#"{"arguments":{"a":[2],"b":1},"result":"success","tag":0}"#);
    }

    #[test]
    fn value_count_is_bounded() {
        assert_eq!(count_values(b"1"), 1);
        assert_eq!(count_values(br#"{"a":"[,{:\"","b":[1,2]}"#), 7);
        let many = format!("[{}1]", "1,".repeat(MAX_JSON_VALUES + 1));
        assert_eq!(parse(many.as_bytes()), Err(BodyError::TooManyValues));
        let big_string = format!(r#"{{"method":"torrent-add","arguments":{{"metainfo":"{}"}}}}"#, "A".repeat(1 << 22));
        assert!(parse(big_string.as_bytes()).unwrap().method.is_some());
    }
}
