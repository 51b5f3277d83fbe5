//! A monitor serving its socket, for tests that drive the engine in their
//! own (multi-threaded) process: the runtime clones containers only from a
//! single-threaded one, as `cubby monitor` is.
//!
//!   monitor_serve ROOT STATE_DIR SOCKET

use cubby_engine::monitor::Monitor;
use std::path::Path;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, state, socket] = args.as_slice() else {
        return Err("usage: monitor_serve ROOT STATE_DIR SOCKET".into());
    };
    // As `cubby monitor`: containers are cloned from a sealed copy.
    cubby_runtime::cloned_exe::ensure_sealed()?;
    cubby_runtime::container::ensure_single_threaded()?;
    let mut m = Monitor::new(Path::new(root), Path::new(state))?;
    m.serve(Path::new(socket))?;
    Ok(())
}
