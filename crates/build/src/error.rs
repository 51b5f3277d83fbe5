//! Typed errors of the builder.

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse; `line` is 1-based.
    #[error("Dockerfile line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    /// An instruction or option cubby does not implement.
    #[error("cubby build does not support {0}")]
    Unsupported(String),
    /// A value that cannot be used as given.
    #[error("{0}")]
    Invalid(String),
    /// A COPY/ADD source that is not in the context (or stage).
    #[error("COPY failed: file not found in build context or excluded by .dockerignore: {0}")]
    MissingSource(String),
    /// A path that leaves the build context (`..`, or a symlink out of it).
    #[error("forbidden path outside the build context: {0}")]
    ContextEscape(String),
    /// A RUN step exited non-zero.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i32 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] cubby_image::ImageError),
    #[error(transparent)]
    Config(#[from] cubby_engine::config::ConfigError),
}

impl BuildError {
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> BuildError {
        BuildError::Io {
            what: what.to_string(),
            source,
        }
    }
    pub fn io_path(path: &std::path::Path, source: std::io::Error) -> BuildError {
        BuildError::io(path.display(), source)
    }
    pub fn invalid(msg: impl Into<String>) -> BuildError {
        BuildError::Invalid(msg.into())
    }
    /// Whether the fault is the caller's (a 400 through the API).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, BuildError::Io { .. } | BuildError::Image(_))
    }
}

pub type Result<T> = std::result::Result<T, BuildError>;
