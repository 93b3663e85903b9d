//! The spec as served and committed: poem-openapi's, with one rewrite so
//! that code generators can read every schema.
//!
//! poem-openapi describes a field whose type is a named schema (an enum or
//! an object) and that carries a description, a default or `nullable` as
//! `{"description": D, "allOf": [{"$ref": R}, {"description": D}]}`: the
//! second `allOf` member repeats the keys around it. That is valid OpenAPI,
//! but generators such as openapi-python-client read a two-member `allOf`
//! as a composition of objects, fail on enums ("Cannot take allOf a
//! non-object") and drop the schema, and with it every operation that uses
//! it. Without the repeated member, `{"description": D, "allOf": [{"$ref":
//! R}]}` means the same and reads as "R, described". A default of such a
//! field that is itself an object (a model's default, which generators
//! cannot represent) goes too; the field stays optional and its
//! description says what absence means.
//!
//! The rewrite keeps the order of every key, so the JSON reads as
//! poem-openapi wrote it (`serde_json::Value` would sort the keys).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// `spec` (poem-openapi's JSON) rewritten as described above, pretty
/// printed. A spec that is not JSON is returned unchanged.
pub fn tidy(spec: &str) -> String {
    let Ok(mut root) = serde_json::from_str::<Node>(spec) else {
        return spec.to_owned();
    };
    root.tidy();
    serde_json::to_string_pretty(&root).unwrap_or_else(|_| spec.to_owned())
}

/// A JSON value whose objects keep their keys in order.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn tidy(&mut self) {
        match self {
            Node::Array(items) => items.iter_mut().for_each(Node::tidy),
            Node::Object(_) => {
                self.collapse_ref();
                if let Node::Object(fields) = self {
                    for (_, v) in fields {
                        v.tidy();
                    }
                }
            }
            _ => {}
        }
    }

    /// `{…K, "allOf": [{"$ref": R}, {…K}]}` → `{…K, "allOf": [{"$ref": R}]}`,
    /// without an object `default`.
    fn collapse_ref(&mut self) {
        let outer = self.clone();
        let Node::Object(fields) = self else { return };
        let Some((_, Node::Array(all_of))) = fields.iter_mut().find(|(k, _)| k == "allOf") else { return };
        let [reference, Node::Object(repeated)] = all_of.as_slice() else { return };
        let is_ref = matches!(reference, Node::Object(r) if r.len() == 1 && r[0].0 == "$ref");
        if !is_ref || !repeated.iter().all(|(k, v)| outer.get(k) == Some(v)) {
            return;
        }
        all_of.truncate(1);
        fields.retain(|(k, v)| !(k == "default" && matches!(v, Node::Object(_))));
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Number(n) => n.serialize(serializer),
            Node::String(s) => serializer.serialize_str(s),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(v).map(Node::Number).ok_or_else(|| E::custom("a non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            fields.push((k, v));
        }
        Ok(Node::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::tidy;

    #[test]
    fn a_described_ref_loses_its_repeated_member() {
        let spec = r##"{"a": {"description": "D", "nullable": true, "allOf": [{"$ref": "#/R"}, {"description": "D", "nullable": true}]}}"##;
        let want = r##"{"a": {"description": "D", "nullable": true, "allOf": [{"$ref": "#/R"}]}}"##;
        assert_eq!(tidy(spec), tidy(want));
        assert!(tidy(want).find("description") < tidy(want).find("allOf"), "keys keep their order");
    }

    #[test]
    fn an_object_default_beside_a_ref_goes_and_scalars_stay() {
        let spec = r##"{"a": {"default": {"x": []}, "allOf": [{"$ref": "#/R"}, {"default": {"x": []}}]},
                        "b": {"default": 0, "allOf": [{"$ref": "#/R"}, {"default": 0}]}}"##;
        let want = r##"{"a": {"allOf": [{"$ref": "#/R"}]}, "b": {"default": 0, "allOf": [{"$ref": "#/R"}]}}"##;
        assert_eq!(tidy(spec), tidy(want));
    }

    #[test]
    fn compositions_that_say_more_are_kept() {
        let spec = r##"{"a": {"allOf": [{"$ref": "#/R"}, {"type": "object", "properties": {}}]}, "f": 255.0}"##;
        let tidied = tidy(spec);
        assert!(tidied.contains("\"properties\""));
        assert!(tidied.contains("255.0"));
    }
}
