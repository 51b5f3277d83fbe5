//! `docker import --change` / `cubby import --change`: Dockerfile
//! instructions applied to an imported image's config, so a root
//! filesystem becomes a runnable image without a Dockerfile.
//!
//! Supported: CMD, ENTRYPOINT, ENV, USER, WORKDIR, EXPOSE, LABEL,
//! STOPSIGNAL, VOLUME (the instructions Docker's import takes that change
//! only the config). Anything else is refused naming the instruction.

use crate::error::{ImageError, Result};
use serde_json::{Map, Value};

fn invalid(reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        what: "--change".into(),
        reason: reason.into(),
    }
}

/// A JSON array of strings (exec form), or the shell form as
/// `/bin/sh -c TEXT`, as a Dockerfile reads CMD and ENTRYPOINT.
fn command(rest: &str) -> Value {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return Value::from(v);
        }
    }
    Value::from(vec!["/bin/sh".to_string(), "-c".into(), rest.to_string()])
}

/// `K=V K2="v 2"` or the legacy `K V...` form.
fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>> {
    if !rest.contains('=')
        || rest
            .split_whitespace()
            .next()
            .is_some_and(|w| !w.contains('='))
    {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| invalid(format!("{what} needs KEY=VALUE or KEY VALUE: {rest:?}")))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            chars.next();
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
                _ => word.push(c),
            }
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| invalid(format!("{what} needs KEY=VALUE: {word:?}")))?;
        if k.is_empty() {
            return Err(invalid(format!("{what} has an empty key")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Applies `changes` (one instruction each) to `config` (the image
/// config's `config` object).
pub fn apply(config: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    for change in changes {
        let change = change.trim();
        if change.is_empty() {
            continue;
        }
        let (word, rest) = change
            .split_once(char::is_whitespace)
            .map(|(w, r)| (w, r.trim()))
            .unwrap_or((change, ""));
        let word = word.to_ascii_uppercase();
        if rest.is_empty() {
            return Err(invalid(format!("{word} needs an argument")));
        }
        match word.as_str() {
            "CMD" => {
                config.insert("Cmd".into(), command(rest));
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), command(rest));
            }
            "USER" => {
                config.insert("User".into(), rest.into());
            }
            "WORKDIR" => {
                if !rest.starts_with('/') {
                    return Err(invalid(format!("WORKDIR must be absolute: {rest:?}")));
                }
                config.insert("WorkingDir".into(), rest.into());
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), rest.into());
            }
            "ENV" => {
                let env = config
                    .entry("Env")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !env.is_array() {
                    *env = Value::Array(Vec::new());
                }
                let list = env.as_array_mut().expect("made an array above");
                for (k, v) in pairs(rest, "ENV")? {
                    let prefix = format!("{k}=");
                    list.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                    list.push(Value::from(format!("{k}={v}")));
                }
            }
            "LABEL" => {
                let labels = object(config, "Labels");
                for (k, v) in pairs(rest, "LABEL")? {
                    labels.insert(k, v.into());
                }
            }
            "EXPOSE" => {
                let ports: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
                let exposed = object(config, "ExposedPorts");
                for p in ports {
                    let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(invalid(format!("EXPOSE: invalid port {p:?}")));
                    }
                    exposed.insert(format!("{num}/{proto}"), Value::Object(Map::new()));
                }
            }
            "VOLUME" => {
                let paths = match serde_json::from_str::<Vec<String>>(rest) {
                    Ok(v) => v,
                    Err(_) => rest.split_whitespace().map(str::to_string).collect(),
                };
                let volumes = object(config, "Volumes");
                for p in paths {
                    volumes.insert(p, Value::Object(Map::new()));
                }
            }
            other => {
                return Err(ImageError::Unsupported {
                    what: "--change instruction (cubby supports CMD, ENTRYPOINT, ENV, USER, WORKDIR, EXPOSE, LABEL, STOPSIGNAL, VOLUME)".into(),
                    value: other.to_string(),
                })
            }
        }
    }
    Ok(())
}

fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = config
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("made an object above")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(changes: &[&str]) -> Result<Value> {
        let mut c = json!({"Env": ["PATH=/bin"]}).as_object().cloned().unwrap();
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        apply(&mut c, &changes).map(|_| Value::Object(c))
    }

    #[test]
    fn instructions() {
        let c = run(&[
            r#"CMD ["echo","hi"]"#,
            "ENTRYPOINT /bin/sh -c",
            "ENV A=1 B=\"two words\"",
            "ENV C 3 4",
            "ENV PATH=/usr/bin",
            "user 1000",
            "WORKDIR /work",
            "EXPOSE 80 53/udp",
            "LABEL k=v",
            "STOPSIGNAL SIGINT",
            "VOLUME /data",
        ])
        .unwrap();
        assert_eq!(c["Cmd"], json!(["echo", "hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/sh -c"]));
        assert_eq!(
            c["Env"],
            json!(["A=1", "B=two words", "C=3 4", "PATH=/usr/bin"])
        );
        assert_eq!(c["User"], "1000");
        assert_eq!(c["WorkingDir"], "/work");
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Labels"], json!({"k": "v"}));
        assert_eq!(c["StopSignal"], "SIGINT");
        assert_eq!(c["Volumes"], json!({"/data": {}}));
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = run(&["RUN make"]).unwrap_err().to_string();
        assert!(e.contains("RUN"), "{e}");
        assert!(run(&["WORKDIR rel"])
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(run(&["EXPOSE http"]).is_err());
        assert!(run(&["CMD"]).is_err());
        assert!(run(&["ENV =x"]).is_err());
    }
}
