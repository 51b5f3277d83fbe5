//! The content store: ingest, layers, image records, gc, crash leftovers.

use cubby_image::digest::Digest;
use cubby_image::store::{ImageRecord, Store};
use cubby_image::ImageError;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;

/// Files (not directories) anywhere under `dir`.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

#[test]
fn ingest_verifies_and_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let data = b"hello blob".repeat(100_000);
    let d = Digest::of(&data);
    assert!(!store.has_blob(&d));
    let p = store
        .ingest(&d, Some(data.len() as u64), &data[..])
        .unwrap();
    assert_eq!(p, store.blob_path(&d));
    assert!(store.has_blob(&d));
    assert_eq!(fs::read(&p).unwrap(), data);
    // Again: fine.
    store.ingest(&d, None, &data[..]).unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), data);
    assert_eq!(store.blob_size(&d).unwrap(), data.len() as u64);

    let small = store.put_blob(br#"{"config":1}"#).unwrap();
    assert_eq!(small, Digest::of(br#"{"config":1}"#));
    assert_eq!(store.read_blob(&small).unwrap(), br#"{"config":1}"#);

    let missing = Digest::of(b"missing");
    assert!(matches!(
        store.read_blob(&missing),
        Err(ImageError::NotFound { .. })
    ));
}

struct FailingReader {
    left: usize,
}
impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(1);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn ingest_rejects_mismatch_and_truncation_leaving_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let data = vec![42u8; 300_000];
    let d = Digest::of(&data);

    let wrong = Digest::of(b"other");
    let r = store.ingest(&wrong, None, &data[..]);
    assert!(matches!(r, Err(ImageError::DigestMismatch { .. })), "{r:?}");

    let r = store.ingest(&d, Some(data.len() as u64), &data[..1000]);
    assert!(matches!(r, Err(ImageError::SizeMismatch { .. })), "{r:?}");

    let r = store.ingest(&d, None, &data[..1000]);
    assert!(matches!(r, Err(ImageError::DigestMismatch { .. })), "{r:?}");

    // Longer than announced: stops reading and fails.
    let long = [&data[..], b"extra"].concat();
    let r = store.ingest(&d, Some(data.len() as u64), &long[..]);
    assert!(matches!(r, Err(ImageError::SizeMismatch { .. })), "{r:?}");

    let r = store.ingest(&d, None, FailingReader { left: 100_000 });
    assert!(matches!(r, Err(ImageError::Io { .. })), "{r:?}");

    assert!(!store.has_blob(&d));
    assert!(!store.has_blob(&wrong));
    assert!(files_under(&tmp.path().join("blobs")).is_empty());
    assert!(files_under(&tmp.path().join("tmp")).is_empty());
}

#[test]
fn read_blob_detects_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let d = store.put_blob(b"{\"manifest\":true}").unwrap();
    fs::write(store.blob_path(&d), b"{\"manifest\":false}").unwrap();
    let e = store.read_blob(&d).unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }));
    let msg = e.to_string();
    assert!(msg.contains(d.hex()), "{msg}");
    assert!(msg.contains("cubby image prune"), "{msg}");
}

#[test]
fn killed_leftovers_in_tmp_are_cleaned_on_open_but_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(tmp.path()).unwrap());
    // A killed process's ingest: its own tmp dir with a partial blob, no lock held.
    let dead = tmp.path().join("tmp/99999-0-0");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("blob-0"), b"partial").unwrap();
    fs::write(tmp.path().join("locks/tmp-99999-0-0.lock"), b"").unwrap();
    fs::write(tmp.path().join("tmp/stray"), b"partial").unwrap();

    let live = Store::open(tmp.path()).unwrap();
    assert!(!dead.exists());
    assert!(!tmp.path().join("tmp/stray").exists());
    assert!(!tmp.path().join("locks/tmp-99999-0-0.lock").exists());
    let live_dirs: Vec<_> = fs::read_dir(tmp.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(live_dirs.len(), 1);
    // Simulate an in-progress ingest of `live`, then another process opens.
    fs::write(live_dirs[0].join("blob-7"), b"in progress").unwrap();
    let other = Store::open(tmp.path()).unwrap();
    assert!(live_dirs[0].join("blob-7").exists(), "live tmp dir removed");
    drop(other);
    drop(live);
    assert!(fs::read_dir(tmp.path().join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn chain_id_known_answer() {
    let a = Digest::of(b"a");
    let b = Digest::of(b"b");
    let c = Digest::of(b"c");
    assert_eq!(Store::chain_id(None, &a), a);
    let ab = Store::chain_id(Some(&a), &b);
    // printf "sha256:$(a) sha256:$(b)" | sha256sum
    assert_eq!(
        ab.to_string(),
        "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
    );
    let abc = Store::chain_id(Some(&ab), &c);
    assert_eq!(
        abc.to_string(),
        "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"
    );
    assert_eq!(Store::chain_ids(&[a.clone(), b, c]), vec![a, ab, abc]);
}

#[test]
fn unpacks_gzip_zstd_and_plain_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let tar = layer_tar(&[("etc/hello", b"hi"), ("bin/x", &[9u8; 5000])]);
    let diff_id = Digest::of(&tar);
    let cases: [(&str, Vec<u8>); 5] = [
        ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&tar)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&tar)),
        ("application/vnd.oci.image.layer.v1.tar", tar.clone()),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip(&tar),
        ),
        // Mislabelled: sniffing wins.
        ("application/vnd.oci.image.layer.v1.tar+gzip", zstd(&tar)),
    ];
    for (i, (mt, blob)) in cases.iter().enumerate() {
        // Distinct chain ids so each case really unpacks.
        let parent = Digest::of(format!("parent{i}").as_bytes());
        let chain = Store::chain_id(Some(&parent), &diff_id);
        assert!(!store.has_layer(&chain));
        let n = store.unpack_layer(&chain, &diff_id, &blob[..], mt).unwrap();
        assert_eq!(n, 5002, "{mt}");
        assert!(store.has_layer(&chain));
        let dir = store.layer_dir(&chain);
        assert_eq!(fs::read(dir.join("etc/hello")).unwrap(), b"hi", "{mt}");
        assert_eq!(fs::read(dir.join("bin/x")).unwrap().len(), 5000);
        // Present: skipped without reading.
        let n = store
            .unpack_layer(&chain, &diff_id, FailingReader { left: 0 }, mt)
            .unwrap();
        assert_eq!(n, 5002);
    }
    assert!(files_under(&tmp.path().join("tmp")).is_empty());
}

#[test]
fn unpack_layer_rejects_wrong_diff_id_and_media_type() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let tar = layer_tar(&[("f", b"content")]);
    let wrong = Digest::of(b"not the tar");
    let r = store.unpack_layer(&wrong, &wrong, &gzip(&tar)[..], "");
    assert!(matches!(r, Err(ImageError::DigestMismatch { .. })), "{r:?}");
    assert!(!store.has_layer(&wrong));
    assert!(!store.layer_dir(&wrong).exists());
    assert!(files_under(&tmp.path().join("tmp")).is_empty());

    let d = Digest::of(&tar);
    let r = store.unpack_layer(
        &d,
        &d,
        &tar[..],
        "application/vnd.oci.image.layer.v1.tar+encrypted",
    );
    assert!(matches!(r, Err(ImageError::Unsupported { .. })), "{r:?}");

    // Truncated gzip stream.
    let gz = gzip(&tar);
    let r = store.unpack_layer(&d, &d, &gz[..gz.len() / 2], "");
    assert!(r.is_err());
    assert!(!store.has_layer(&d));
}

struct CountingReader<'a> {
    data: &'a [u8],
    reads: &'a AtomicUsize,
}
impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        // Slow the stream down so the other thread really waits.
        std::thread::sleep(std::time::Duration::from_millis(1));
        self.data.read(buf)
    }
}

#[test]
fn concurrent_unpacks_of_one_layer_unpack_once() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("d/f{i}"), vec![i as u8; 10_000]))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let tar = layer_tar(&refs);
    let diff_id = Digest::of(&tar);
    let blob = gzip(&tar);
    // Same Store shared by threads, and separate Stores (as two processes would).
    let shared = Store::open(tmp.path()).unwrap();
    let separate = Store::open(tmp.path()).unwrap();
    for (round, stores) in [[&shared, &shared], [&shared, &separate]]
        .into_iter()
        .enumerate()
    {
        let chain = Store::chain_id(Some(&Digest::of(&[round as u8])), &diff_id);
        let counters = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            for (store, reads) in stores.iter().zip(&counters) {
                let (chain, diff_id, blob, barrier) = (&chain, &diff_id, &blob, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let r = CountingReader { data: blob, reads };
                    let n = store
                        .unpack_layer(
                            chain,
                            diff_id,
                            r,
                            "application/vnd.oci.image.layer.v1.tar+gzip",
                        )
                        .unwrap();
                    assert_eq!(n, 2_000_000);
                    assert!(store.has_layer(chain));
                });
            }
        });
        let readers = counters
            .iter()
            .filter(|c| c.load(Ordering::SeqCst) > 0)
            .count();
        assert_eq!(readers, 1, "round {round}: layer unpacked more than once");
        assert_eq!(
            fs::read(shared.layer_dir(&chain).join("d/f7")).unwrap(),
            vec![7u8; 10_000]
        );
    }
}

fn record(
    name: &str,
    manifest: &Digest,
    config: &Digest,
    blobs: &[Digest],
    layers: &[Digest],
) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        manifest_digest: manifest.clone(),
        config_digest: config.clone(),
        layers: layers.to_vec(),
        blobs: blobs.to_vec(),
        size: 1234,
        created: "2024-01-01T00:00:00Z".into(),
    }
}

#[test]
fn image_records_round_trip_and_corrupt_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert!(store.images().unwrap().is_empty());
    let m = Digest::of(b"m");
    let c = Digest::of(b"c");
    let l = Digest::of(b"l");
    let a = record(
        "docker.io/library/alpine:3.18",
        &m,
        &c,
        std::slice::from_ref(&l),
        std::slice::from_ref(&l),
    );
    let b = record("docker.io/library/busybox:latest", &c, &m, &[], &[]);
    store.put_image(a.clone()).unwrap();
    store.put_image(b.clone()).unwrap();
    assert_eq!(store.get_image(&a.name).unwrap(), Some(a.clone()));
    let reopened = Store::open(tmp.path()).unwrap();
    assert_eq!(reopened.images().unwrap(), vec![a.clone(), b.clone()]);
    let mut a2 = a.clone();
    a2.size = 99;
    store.put_image(a2.clone()).unwrap();
    assert_eq!(store.get_image(&a.name).unwrap().unwrap().size, 99);
    assert!(store.remove_image(&b.name).unwrap());
    assert!(!store.remove_image(&b.name).unwrap());
    assert_eq!(store.get_image(&b.name).unwrap(), None);
    assert_eq!(store.images().unwrap().len(), 1);

    // Concurrent writers don't lose updates.
    std::thread::scope(|s| {
        for i in 0..8 {
            let store = &store;
            let m = &m;
            s.spawn(move || {
                let own = Store::open(store.root()).unwrap();
                own.put_image(record(&format!("img{i}"), m, m, &[], &[]))
                    .unwrap();
            });
        }
    });
    assert_eq!(store.images().unwrap().len(), 9);

    // Corrupt images.json: open still works, record calls explain the fix,
    // nothing is overwritten or deleted.
    let path = tmp.path().join("images.json");
    fs::write(&path, b"{\"version\":1,\"images\":{tru").unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let e = store.images().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("mv "), "{msg}");
    assert!(store.put_image(a2).is_err());
    assert!(store.get_image("x").is_err());
    assert_eq!(fs::read(&path).unwrap(), b"{\"version\":1,\"images\":{tru");
}

#[test]
fn gc_removes_unreferenced_and_keeps_referenced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let manifest = store.put_blob(b"manifest").unwrap();
    let config = store.put_blob(b"config").unwrap();
    let orphan = store.put_blob(&[5u8; 1000]).unwrap();

    let layer = |name: &str| {
        let tar = layer_tar(&[(name, &[1u8; 3000][..])]);
        let blob = gzip(&tar);
        let blob_d = store.put_blob(&blob).unwrap();
        let diff = Digest::of(&tar);
        store.unpack_layer(&diff, &diff, &blob[..], "").unwrap();
        (blob_d, diff)
    };
    let (used_blob, used_layer) = layer("used");
    let (_unused_blob, unused_layer) = layer("unused");
    let (_container_blob, container_layer) = layer("container");
    // A killed unpack's leftover (no committed marker).
    let half = tmp.path().join("layers").join(Digest::of(b"half").hex());
    fs::create_dir_all(half.join("diff")).unwrap();

    store
        .put_image(record(
            "docker.io/library/app:1",
            &manifest,
            &config,
            std::slice::from_ref(&used_blob),
            std::slice::from_ref(&used_layer),
        ))
        .unwrap();

    let report = store.gc(std::slice::from_ref(&container_layer)).unwrap();
    assert_eq!(report.blobs_removed, 3, "{report:?}"); // orphan + 2 layer blobs
    assert_eq!(report.layers_removed, 2, "{report:?}"); // unused + half
    assert!(report.bytes_freed >= 1000 + 3000);
    for d in [&manifest, &config, &used_blob] {
        assert!(store.has_blob(d));
    }
    assert!(!store.has_blob(&orphan));
    assert!(store.has_layer(&used_layer));
    assert!(store.has_layer(&container_layer));
    assert!(!store.has_layer(&unused_layer));
    assert!(!half.exists());
    assert!(!store.layer_dir(&unused_layer).exists());
    assert_eq!(store.read_blob(&manifest).unwrap(), b"manifest");

    // Nothing left to do: idempotent.
    assert_eq!(
        store
            .gc(std::slice::from_ref(&container_layer))
            .unwrap()
            .blobs_removed,
        0
    );

    // Remove the image: everything but the container's layer goes.
    store.remove_image("docker.io/library/app:1").unwrap();
    let report = store.gc(std::slice::from_ref(&container_layer)).unwrap();
    assert_eq!((report.blobs_removed, report.layers_removed), (3, 1));
    assert!(store.has_layer(&container_layer));
    let r = store.gc(&[]).unwrap();
    assert_eq!(r.layers_removed, 1);
    assert!(files_under(&tmp.path().join("layers")).is_empty());
    let du = store.disk_usage().unwrap();
    assert_eq!((du.blobs, du.layers), (0, 0));
}

#[test]
fn gc_waits_for_pinned_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let pin = store.pin().unwrap();
    let blob = store.put_blob(b"being pulled").unwrap();
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let other = Store::open(tmp.path()).unwrap();
            other.gc(&[]).unwrap();
            done.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(done.load(Ordering::SeqCst), 0, "gc ran while pinned");
        assert!(store.has_blob(&blob));
        store
            .put_image(record("x", &blob, &blob, &[], &[]))
            .unwrap();
        drop(pin);
    });
    assert!(store.has_blob(&blob), "referenced once the pull finished");
}

/// `cargo test --release -p cubby-image --test store -- --ignored --nocapture bench`

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<cubby_image::store::LockGuard>();
}
