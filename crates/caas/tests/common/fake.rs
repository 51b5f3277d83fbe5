//! An in-memory Backend for the state machine tests (the API tests in
//! crates/cubby run real sandboxes through the real engine).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use cubby_caas::backend::*;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::broadcast;

pub struct Fake {
    pub sandboxes: Mutex<BTreeMap<String, SandboxInfo>>,
    /// How many times a sandbox was actually created.
    pub creates: AtomicUsize,
    /// How many times a sandbox that existed and was not running was
    /// started again.
    pub restarts: AtomicUsize,
    pub start_delay: Duration,
    /// Starts in progress now, and the most ever at once.
    pub starting: AtomicUsize,
    pub max_starting: AtomicUsize,
    pub events: broadcast::Sender<SandboxEvent>,
    pub images: Vec<String>,
}

impl Fake {
    pub fn new(start_delay: Duration) -> Fake {
        Fake {
            sandboxes: Mutex::new(BTreeMap::new()),
            creates: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
            start_delay,
            starting: AtomicUsize::new(0),
            max_starting: AtomicUsize::new(0),
            events: broadcast::channel(1024).0,
            images: vec!["demo:1".into()],
        }
    }

    /// The sandbox's process dies (OOM or not), as the engine would report.
    pub fn exit(&self, name: &str, code: i64, oom: bool) {
        if let Some(s) = self.sandboxes.lock().unwrap().get_mut(name) {
            s.status = SandboxStatus::Exited;
            s.exit_code = Some(code);
            s.oom_killed = oom;
        }
        let _ = self.events.send(SandboxEvent::Exited {
            name: name.into(),
            exit_code: code,
            oom_killed: oom,
        });
    }

    pub fn running(&self) -> usize {
        self.sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.status == SandboxStatus::Running)
            .count()
    }
}

#[async_trait]
impl Backend for Fake {
    async fn describe(&self) -> Result<String, BackendError> {
        Ok("fake".into())
    }
    async fn check_image(&self, image: &str) -> Result<(), BackendError> {
        if self.images.iter().any(|i| i == image) {
            Ok(())
        } else {
            Err(BackendError::ImageMissing {
                image: image.into(),
                hint: "import it".into(),
            })
        }
    }
    async fn ensure_network(&self, _net: &ClassNetwork) -> Result<(), BackendError> {
        Ok(())
    }
    async fn remove_network(&self, _name: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn start_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, BackendError> {
        let now = self.starting.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_starting.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.start_delay).await;
        self.starting.fetch_sub(1, Ordering::SeqCst);
        let mut m = self.sandboxes.lock().unwrap();
        let info = m.entry(spec.name.clone()).or_insert_with(|| {
            self.creates.fetch_add(1, Ordering::SeqCst);
            SandboxInfo {
                id: spec.name.clone(),
                name: spec.name.clone(),
                status: SandboxStatus::Created,
                labels: spec.labels.clone(),
                address: Some("10.0.0.2".parse().unwrap()),
                exit_code: None,
                oom_killed: false,
            }
        });
        if info.status == SandboxStatus::Exited {
            self.restarts.fetch_add(1, Ordering::SeqCst);
        }
        info.status = SandboxStatus::Running;
        Ok(info.clone())
    }
    async fn inspect_sandbox(&self, name: &str) -> Result<Option<SandboxInfo>, BackendError> {
        Ok(self.sandboxes.lock().unwrap().get(name).cloned())
    }
    async fn stop_sandbox(&self, name: &str, _grace: Duration) -> Result<(), BackendError> {
        if let Some(s) = self.sandboxes.lock().unwrap().get_mut(name) {
            s.status = SandboxStatus::Exited;
        }
        Ok(())
    }
    async fn remove_sandbox(&self, name: &str) -> Result<(), BackendError> {
        self.sandboxes.lock().unwrap().remove(name);
        Ok(())
    }
    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, BackendError> {
        Ok(self.sandboxes.lock().unwrap().values().cloned().collect())
    }
    async fn exec(
        &self,
        _name: &str,
        _cmd: &[String],
        _user: Option<&str>,
    ) -> Result<ExecOutput, BackendError> {
        Err(BackendError::Unsupported("exec".into()))
    }
    async fn wait_ready(
        &self,
        sandbox: &SandboxInfo,
        _port: u16,
        _timeout: Duration,
    ) -> Result<(), BackendError> {
        match self.sandboxes.lock().unwrap().get(&sandbox.name) {
            Some(s) if s.status == SandboxStatus::Running => Ok(()),
            _ => Err(BackendError::NotReady {
                name: sandbox.name.clone(),
                reason: "exited".into(),
            }),
        }
    }
    async fn events(
        &self,
    ) -> Result<BoxStream<'static, Result<SandboxEvent, BackendError>>, BackendError> {
        let rx = self.events.subscribe();
        Ok(tokio_stream_from(rx))
    }
    async fn export_path(&self, name: &str, path: &str) -> Result<ByteStream, BackendError> {
        // Running or stopped, as Docker and cubby's engine export.
        if !self.sandboxes.lock().unwrap().contains_key(name) {
            return Err(BackendError::NotFound {
                what: format!("sandbox {name}"),
            });
        }
        // Not a tar: the archive path treats the stream as opaque bytes.
        let data = bytes::Bytes::from(format!("workspace of {name} at {path}"));
        Ok(futures_util::stream::iter([Ok(data)]).boxed())
    }
    async fn import_tar(
        &self,
        _name: &str,
        _dir: &str,
        mut tar: ByteStream,
    ) -> Result<(), BackendError> {
        while let Some(chunk) = tar.next().await {
            chunk?;
        }
        Ok(())
    }
    async fn volume_exists(&self, _name: &str) -> Result<bool, BackendError> {
        Ok(false)
    }
    async fn remove_volume(&self, _name: &str) -> Result<(), BackendError> {
        Ok(())
    }
}

fn tokio_stream_from(
    rx: broadcast::Receiver<SandboxEvent>,
) -> BoxStream<'static, Result<SandboxEvent, BackendError>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((Ok(ev), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}
