//! Docker's list filters as the engine applies them (the API parses the
//! `filters` query into [`Filters`]).

use std::collections::BTreeMap;

/// Filter key to the values asked for.
pub type Filters = BTreeMap<String, Vec<String>>;

/// `label` filter values (`key` or `key=value`) against a label map: all
/// must match.
pub fn labels_match(wanted: &[String], labels: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
        None => labels.contains_key(w.as_str()),
    })
}
