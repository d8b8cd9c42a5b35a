//! Reads the merged configuration tree (TOML, `CSS_*` environment, flags)
//! into the components' typed configurations.
//!
//! A value from the environment is always a string, so where a number, a
//! boolean, a list or an enum is wanted a string is read as one (`"7"`,
//! `"true"`, `"a,b"`, `"INFO"`). The error type tells an unknown key from a
//! bad value, so both can be reported in the service's own words.

use serde::de::value::{MapDeserializer, SeqDeserializer, StringDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;
use std::fmt;

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A key the component does not have.
    UnknownKey(String),
    /// A value of the wrong type or out of its domain.
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownKey(k) => write!(f, "unknown key `{k}`"),
            Problem::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Problem {}

impl de::Error for Problem {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Problem::Invalid(msg.to_string())
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        Problem::UnknownKey(field.to_owned())
    }
}

/// One node of the tree, as a serde `Deserializer`.
pub struct Node(pub Value);

impl<'de> IntoDeserializer<'de, Problem> for Node {
    type Deserializer = Node;

    fn into_deserializer(self) -> Node {
        self
    }
}

/// Reads a number of type `$t` also from a string.
macro_rules! number {
    ($($method:ident $t:ty => $visit:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
            match &self.0 {
                Value::String(s) => match s.trim().parse::<$t>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => self.deserialize_any(visitor),
                },
                _ => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = Problem;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, f) => visitor.visit_f64(f.unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                visitor.visit_seq(SeqDeserializer::new(items.into_iter().map(Node)))
            }
            Value::Object(map) => visitor.visit_map(MapDeserializer::new(
                map.into_iter().map(|(k, v)| (k, Node(v))),
            )),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match &self.0 {
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => visitor.visit_bool(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => visitor.visit_bool(false),
            _ => self.deserialize_any(visitor),
        }
    }

    number! {
        deserialize_u8 u8 => visit_u8,
        deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32,
        deserialize_u64 u64 => visit_u64,
        deserialize_i64 i64 => visit_i64,
        deserialize_f64 f64 => visit_f64
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match self.0 {
            Value::Number(n) => visitor.visit_string(n.to_string()),
            other => Node(other).deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        self.deserialize_string(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match self.0 {
            // A comma-separated list.
            Value::String(s) => {
                let items: Vec<Node> = s
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Node(Value::String(s.to_owned())))
                    .collect();
                visitor.visit_seq(SeqDeserializer::new(items.into_iter()))
            }
            other => Node(other).deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Node(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Problem> {
        visitor.visit_newtype_struct(self)
    }

    /// Unit variants by name, in any case (`INFO`, `info`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Problem> {
        match self.0 {
            Value::String(s) => {
                let name: StringDeserializer<Problem> = s.to_ascii_lowercase().into_deserializer();
                visitor.visit_enum(name)
            }
            other => Node(other).deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i128 u128 f32 char bytes byte_buf unit unit_struct
        tuple tuple_struct map struct identifier ignored_any
    }
}

/// Reads `value` as a `T`; on failure, the key path within `value` and why.
pub fn read<T: de::DeserializeOwned>(value: Value) -> Result<T, (String, Problem)> {
    serde_path_to_error::deserialize(Node(value)).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        n: u64,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Colour {
        #[default]
        Red,
        Blue,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        flag: bool,
        ratio: f64,
        names: Vec<String>,
        colour: Colour,
        inner: Inner,
        label: String,
    }

    #[test]
    fn strings_read_as_the_type_wanted() {
        let o: Outer = read(json!({
            "flag": "true", "ratio": "0.5", "names": "a, b", "colour": "BLUE",
            "inner": {"n": "7"}, "label": 12
        }))
        .unwrap();
        assert_eq!(
            o,
            Outer {
                flag: true,
                ratio: 0.5,
                names: vec!["a".into(), "b".into()],
                colour: Colour::Blue,
                inner: Inner { n: 7 },
                label: "12".into(),
            }
        );
    }

    #[test]
    fn problems_say_where_and_what() {
        let (path, p) = read::<Outer>(json!({"inner": {"m": 1}})).unwrap_err();
        assert_eq!(
            (path.as_str(), p),
            ("inner.m", Problem::UnknownKey("m".into()))
        );
        let (path, p) = read::<Outer>(json!({"inner": {"n": "x"}})).unwrap_err();
        assert_eq!(path, "inner.n");
        assert!(matches!(p, Problem::Invalid(m) if m.contains("string \"x\"")));
    }
}
