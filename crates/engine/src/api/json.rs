//! Request bodies are decoded as Docker's Go decoder reads them: the one
//! place every handler of the API turns JSON into a typed body.
//!
//! Go's `encoding/json` accepts `null` for any field and leaves the zero
//! value there: an empty map, list or struct, `""`, `0`, `false`. Clients
//! rely on it (DockerSpawner sends `ExposedPorts: {"8888/tcp": null}`,
//! docker-py sends `"Env": null`), while serde refuses `null` for anything
//! but an `Option`. [`Lenient`] wraps a parsed [`Value`] as a serde
//! deserializer that applies Go's rule at every depth, whatever the target
//! type, so no body type needs per-field annotations.
//!
//! Rejected: stripping `null` members from the JSON before decoding. It is
//! right for struct fields but wrong for map values: `{"8888/tcp": null}`
//! must keep its key (an exposed port), and `{"LABEL": null}` means the
//! label with an empty value, as in Go.

use super::error::{ApiError, ApiResult};
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::{Map, Value};

/// Decodes a request body (`what` names it in the 400's message). An empty
/// body decodes as `{}`, as Docker treats a missing body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> ApiResult<T> {
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))?
    };
    from_value(value, what)
}

/// Decodes an already parsed body (or a JSON query parameter).
pub fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> ApiResult<T> {
    T::deserialize(Lenient(value))
        .map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// A JSON value that reads `null` as the zero value of whatever is asked.
pub struct Lenient(pub Value);

type Error = serde_json::Error;

impl Lenient {
    fn is_null(&self) -> bool {
        self.0.is_null()
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Lenient(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Obj {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Obj {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self.value.take().unwrap_or(Value::Null);
        seed.deserialize(Lenient(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

fn empty_seq() -> Seq {
    Seq(Vec::new().into_iter())
}

fn empty_map() -> Obj {
    Obj {
        iter: Map::new().into_iter(),
        value: None,
    }
}

/// A number asked for where the JSON has `null`: 0.
macro_rules! zero_if_null {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            if self.is_null() {
                visitor.visit_u64(0)
            } else {
                self.deserialize_any(visitor)
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n.deserialize_any(visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::Object(m) => visitor.visit_map(Obj {
                iter: m.into_iter(),
                value: None,
            }),
        }
    }

    zero_if_null! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_bool(false)
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_str("")
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_seq(empty_seq())
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_seq(empty_seq())
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_map(empty_map())
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // Docker's enums are strings; null is Go's "" (the empty variant).
        let v = if self.is_null() {
            Value::String(String::new())
        } else {
            self.0
        };
        v.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    //! The rule checked across the whole API: for every body type a handler
    //! decodes, a full body is generated from the type itself (a tracing
    //! deserializer walks its fields at every depth), then every member at
    //! every depth is set to `null`, one at a time and all at once, and
    //! each such body must decode.

    use super::*;
    use bollard_stubs::models::{
        ContainerCreateBody, ExecConfig, NetworkConnectRequest, NetworkCreateRequest,
        NetworkDisconnectRequest, VolumeCreateOptions,
    };
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    type Slot = Rc<RefCell<Value>>;

    /// A deserializer that says yes to everything and records the JSON
    /// shape the target type asked for.
    struct Tracer {
        slot: Slot,
        depth: usize,
    }

    fn child(depth: usize) -> (Slot, Tracer) {
        let slot: Slot = Rc::new(RefCell::new(Value::Null));
        (
            slot.clone(),
            Tracer {
                slot,
                depth: depth + 1,
            },
        )
    }

    struct TraceMap {
        keys: Vec<&'static str>,
        slots: Vec<(String, Slot)>,
        depth: usize,
        next: usize,
        map: bool,
        string_key: bool,
    }

    impl<'de> MapAccess<'de> for TraceMap {
        type Error = Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            let Some(k) = self.keys.get(self.next) else {
                return Ok(None);
            };
            if self.map {
                // A map's key: traced too (a `HashMap<(), ()>`, Docker's
                // set, takes no string key, so its JSON is `{}`).
                let (slot, t) = child(self.depth);
                let r = seed.deserialize(t)?;
                self.string_key = slot.borrow().is_string();
                return Ok(Some(r));
            }
            seed.deserialize(k.into_deserializer()).map(Some)
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let k = self.keys[self.next];
            self.next += 1;
            let (slot, t) = child(self.depth);
            if self.string_key {
                self.slots.push((k.to_string(), slot));
            }
            seed.deserialize(t)
        }
    }

    struct TraceSeq {
        slot: Option<Slot>,
        depth: usize,
        done: bool,
    }

    impl<'de> SeqAccess<'de> for TraceSeq {
        type Error = Error;
        fn next_element_seed<S: DeserializeSeed<'de>>(
            &mut self,
            seed: S,
        ) -> Result<Option<S::Value>, Error> {
            if self.done {
                return Ok(None);
            }
            self.done = true;
            let (slot, t) = child(self.depth);
            self.slot = Some(slot);
            seed.deserialize(t).map(Some)
        }
    }

    impl Tracer {
        fn set(&self, v: Value) {
            *self.slot.borrow_mut() = v;
        }
        fn object<'de, V: Visitor<'de>>(
            self,
            keys: Vec<&'static str>,
            map: bool,
            visitor: V,
        ) -> Result<V::Value, Error> {
            let mut m = TraceMap {
                keys,
                slots: Vec::new(),
                depth: self.depth,
                next: 0,
                map,
                string_key: true,
            };
            let r = visitor.visit_map(&mut m)?;
            let obj = m
                .slots
                .into_iter()
                .map(|(k, s)| (k, s.borrow().clone()))
                .collect();
            self.set(Value::Object(obj));
            Ok(r)
        }
    }

    impl<'de> Deserializer<'de> for Tracer {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.set(Value::Null);
            v.visit_unit()
        }
        fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.set(Value::Bool(true));
            v.visit_bool(true)
        }
        fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.set(Value::from(1));
            v.visit_u64(1)
        }
        fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.set(Value::from("x"));
            v.visit_str("x")
        }
        fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_string(v)
        }
        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            if self.depth > 12 {
                return v.visit_none();
            }
            v.visit_some(self)
        }
        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            let mut s = TraceSeq {
                slot: None,
                depth: self.depth,
                done: false,
            };
            let r = v.visit_seq(&mut s)?;
            let items = s.slot.map(|s| s.borrow().clone()).into_iter().collect();
            self.set(Value::Array(items));
            Ok(r)
        }
        fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.object(vec!["k"], true, v)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _n: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            self.object(fields.to_vec(), false, v)
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _n: &'static str,
            v: V,
        ) -> Result<V::Value, Error> {
            v.visit_newtype_struct(self)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            // Docker's enums are strings: the last variant (the first is
            // often the empty one).
            let s = Value::from(*variants.last().unwrap_or(&""));
            self.set(s.clone());
            s.deserialize_enum(name, variants, v)
        }
        serde::forward_to_deserialize_any! {
            char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
        }
        fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
        fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }
    }

    /// The full JSON body of `T`, every member present at every depth.
    fn shape<T: DeserializeOwned>() -> Value {
        let (slot, t) = child(0);
        T::deserialize(t).expect("the tracer builds any body type");
        let v = slot.borrow().clone();
        v
    }

    /// Every path to a member (object member or array element).
    fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let kids: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => return,
        };
        for (k, kid) in kids {
            prefix.push(k);
            out.push(prefix.clone());
            paths(kid, prefix, out);
            prefix.pop();
        }
    }

    fn set_null(v: &mut Value, path: &[String]) {
        let mut cur = v;
        for k in path {
            cur = match cur {
                Value::Object(m) => m.get_mut(k).expect("path exists"),
                Value::Array(a) => &mut a[k.parse::<usize>().expect("index")],
                _ => unreachable!(),
            };
        }
        *cur = Value::Null;
    }

    /// Every leaf null, containers kept: the deepest "all null" body.
    fn leaves_null(v: &mut Value) {
        match v {
            Value::Object(m) => m.values_mut().for_each(leaves_null),
            Value::Array(a) => a.iter_mut().for_each(leaves_null),
            other => *other = Value::Null,
        }
    }

    fn check<T: DeserializeOwned>(what: &str) -> usize {
        let full = shape::<T>();
        from_value::<T>(full.clone(), what).unwrap_or_else(|e| panic!("{what} full: {e:?}"));
        let mut all = Vec::new();
        paths(&full, &mut Vec::new(), &mut all);
        for p in &all {
            let mut body = full.clone();
            set_null(&mut body, p);
            if let Err(e) = from_value::<T>(body, what) {
                panic!("{what}: null at {} refused: {}", p.join("."), e.message);
            }
        }
        let mut body = full.clone();
        leaves_null(&mut body);
        from_value::<T>(body, what).unwrap_or_else(|e| panic!("{what} leaves null: {e:?}"));
        if let Value::Object(m) = &full {
            let nulls = m.keys().map(|k| (k.clone(), Value::Null)).collect();
            from_value::<T>(Value::Object(nulls), what)
                .unwrap_or_else(|e| panic!("{what} all null: {e:?}"));
        }
        all.len()
    }

    /// Every body type the API decodes (keep in step with the handlers:
    /// each decodes through [`decode`]).
    #[test]
    fn null_is_accepted_everywhere() {
        let n = check::<ContainerCreateBody>("create body")
            + check::<ExecConfig>("exec body")
            + check::<crate::api::exec::StartBody>("exec start body")
            + check::<NetworkCreateRequest>("network create body")
            + check::<NetworkConnectRequest>("connect body")
            + check::<NetworkDisconnectRequest>("disconnect body")
            + check::<VolumeCreateOptions>("volume create body")
            + check::<Value>("filters");
        // The create body alone has hundreds of members at every depth.
        assert!(n > 300, "only {n} members traced");
    }

    #[test]
    fn null_means_go_zero_values() {
        let b: ContainerCreateBody = decode(
            br#"{"Image":"i","ExposedPorts":{"8888/tcp":null},"Env":null,"Labels":{"a":null},
                "HostConfig":{"Binds":null,"PortBindings":{"8888/tcp":null},"Memory":null,
                "Privileged":null,"RestartPolicy":{"Name":null}}}"#,
            "create body",
        )
        .expect("decodes");
        let ports = b.exposed_ports.expect("kept");
        assert!(
            ports.contains_key("8888/tcp"),
            "a null map value keeps its key"
        );
        assert_eq!(b.env, None);
        assert_eq!(
            b.labels,
            Some(HashMap::from([("a".to_string(), String::new())]))
        );
        let hc = b.host_config.expect("host config");
        assert_eq!(hc.memory, None);
        assert!(hc.port_bindings.expect("kept").contains_key("8888/tcp"));
        let none: ContainerCreateBody = decode(b"", "create body").expect("empty body");
        assert_eq!(none.image, None);
        let e = decode::<ContainerCreateBody>(br#"{"Image":3}"#, "create body").unwrap_err();
        assert!(
            e.message.starts_with("invalid create body:"),
            "{}",
            e.message
        );
    }
}
