//! What an image's config contributes to `run`: the command (Entrypoint and
//! Cmd with Docker's rules), environment, working directory and user.

use crate::error::{ImageError, Result};
use oci_spec::image::ImageConfiguration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunDefaults {
    /// Entrypoint + (user's args, or the image's Cmd).
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
}

/// Docker's rules: the user's arguments replace Cmd (not Entrypoint); an
/// `--entrypoint` given on the command line also drops the image's Cmd.
pub fn run_defaults(
    image: &str,
    config: &ImageConfiguration,
    entrypoint: Option<&[String]>,
    user_args: &[String],
) -> Result<RunDefaults> {
    let c = config.config().clone().unwrap_or_default();
    let (entry, default_cmd) = match entrypoint {
        Some(e) => (e.to_vec(), Vec::new()),
        None => (
            c.entrypoint().clone().unwrap_or_default(),
            c.cmd().clone().unwrap_or_default(),
        ),
    };
    let mut command = entry;
    command.extend(if user_args.is_empty() {
        default_cmd
    } else {
        user_args.to_vec()
    });
    if command.is_empty() {
        return Err(ImageError::Invalid {
            what: format!("command for {image}"),
            reason: "the image has no Entrypoint or Cmd: give a command after the image name"
                .into(),
        });
    }
    let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
    Ok(RunDefaults {
        command,
        env: c.env().clone().unwrap_or_default(),
        workdir: nonempty(c.working_dir()),
        user: nonempty(c.user()),
        exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfiguration {
        let v = |x: Option<&[&str]>| x.map(|a| a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Entrypoint": v(entry), "Cmd": v(cmd), "Env": ["PATH=/bin", "A=1"],
                       "WorkingDir": "/app", "User": "1000:1000", "ExposedPorts": {"8080/tcp": {}}}
        }))
        .unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_rules() {
        let c = config(Some(&["/init"]), Some(&["serve"]));
        assert_eq!(
            run_defaults("i", &c, None, &[]).unwrap().command,
            s(&["/init", "serve"])
        );
        assert_eq!(
            run_defaults("i", &c, None, &s(&["sh"])).unwrap().command,
            s(&["/init", "sh"])
        );
        let e = s(&["/bin/other"]);
        assert_eq!(
            run_defaults("i", &c, Some(&e), &[]).unwrap().command,
            s(&["/bin/other"])
        );
        let c = config(None, Some(&["sh"]));
        let d = run_defaults("i", &c, None, &[]).unwrap();
        assert_eq!(d.command, s(&["sh"]));
        assert_eq!(d.env, s(&["PATH=/bin", "A=1"]));
        assert_eq!(d.workdir.as_deref(), Some("/app"));
        assert_eq!(d.user.as_deref(), Some("1000:1000"));
        assert_eq!(d.exposed_ports, s(&["8080/tcp"]));
        assert_eq!(
            run_defaults("i", &c, None, &s(&["ls", "-l"]))
                .unwrap()
                .command,
            s(&["ls", "-l"])
        );
        let c = config(None, None);
        assert!(run_defaults("i", &c, None, &[]).is_err());
    }
}
