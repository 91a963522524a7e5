//! The object store contract, run against both implementations: the same `contract` body against
//! a `LocalStore` in a temporary directory and against an `S3Store` on a real S3 server.
//!
//! The S3 tests need a server: run them through the harness, which starts a throwaway SeaweedFS
//! and exports its address and credentials:
//!
//!     scripts/services.sh cargo test -p parley-recording --test object_store
//!
//! Without `PARLEY_TEST_S3_ENDPOINT` / `_ACCESS_KEY` / `_SECRET_KEY` / `_REGION` they fail.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_recording::object_store::{
    ByteRange, LocalStore, MULTIPART_PART_SIZE, MULTIPART_THRESHOLD, ObjectError, ObjectStore, S3Config, S3Store,
};
use rusoto_s3::S3;

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn read(store: &dyn ObjectStore, key: &str, range: Option<ByteRange>) -> (u64, u64, u64, String, Bytes) {
    let body = store.get(key, range).await.unwrap_or_else(|e| panic!("get {key} {range:?}: {e}"));
    let (total, start, end, content_type) = (body.total, body.start, body.end, body.content_type.clone());
    let len = body.len();
    let bytes = body.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, len, "{key} {range:?}: ObjectBody::len matches the body");
    (total, start, end, content_type, bytes)
}

fn keys(list: &[parley_recording::object_store::ObjectMeta]) -> Vec<&str> {
    list.iter().map(|m| m.key.as_str()).collect()
}

/// The behaviour every store must have. `base` is a fresh prefix (`run-…/`) nothing else uses.
async fn contract(store: &dyn ObjectStore, base: &str, scratch: &Path) {
    let k = |rest: &str| format!("{base}{rest}");
    let started = Instant::now();

    // put / get / head.
    let chunk = Bytes::from(data(100_000, 1));
    store.put(&k("rec/part-1/cam.webm/000001"), chunk.clone(), "video/webm").await.unwrap();
    let (total, start, end, content_type, bytes) = read(store, &k("rec/part-1/cam.webm/000001"), None).await;
    assert_eq!((total, start, end), (100_000, 0, 99_999));
    assert_eq!(content_type, "video/webm", "the content type given to put is kept (no extension here)");
    assert_eq!(bytes, chunk);
    let meta = store.head(&k("rec/part-1/cam.webm/000001")).await.unwrap().expect("head finds the object");
    assert_eq!(meta.key, k("rec/part-1/cam.webm/000001"));
    assert_eq!(meta.size, 100_000);
    assert_eq!(meta.content_type.as_deref(), Some("video/webm"));

    // Overwrite replaces both the bytes and the content type.
    store.put(&k("rec/part-1/cam.webm/000001"), Bytes::from_static(b"short"), "application/x-test").await.unwrap();
    let (total, _, _, content_type, bytes) = read(store, &k("rec/part-1/cam.webm/000001"), None).await;
    assert_eq!((total, &bytes[..], content_type.as_str()), (5, &b"short"[..], "application/x-test"));

    // An empty object.
    store.put(&k("rec/empty.txt"), Bytes::new(), "text/plain").await.unwrap();
    let (total, _, _, _, bytes) = read(store, &k("rec/empty.txt"), None).await;
    assert_eq!((total, bytes.len()), (0, 0));
    assert_eq!(store.head(&k("rec/empty.txt")).await.unwrap().unwrap().size, 0);

    // list: sorted by key, a plain string prefix (not only whole segments).
    for (name, len) in [("rec/part-1/cam.webm/000003", 3), ("rec/part-1/cam.webm/000002", 2), ("rec/part-10/x", 10)] {
        store.put(&k(name), Bytes::from(data(len, len as u64)), "video/webm").await.unwrap();
    }
    store.put(&k("other/a"), Bytes::from_static(b"a"), "text/plain").await.unwrap();
    let all = store.list(base).await.unwrap();
    assert_eq!(
        keys(&all),
        [
            k("other/a"),
            k("rec/empty.txt"),
            k("rec/part-1/cam.webm/000001"),
            k("rec/part-1/cam.webm/000002"),
            k("rec/part-1/cam.webm/000003"),
            k("rec/part-10/x"),
        ]
    );
    assert_eq!(all.iter().map(|m| m.size).collect::<Vec<_>>(), [1, 0, 5, 2, 3, 10]);
    assert_eq!(keys(&store.list(&k("rec/part-1/")).await.unwrap()).len(), 3);
    assert_eq!(keys(&store.list(&k("rec/part-1")).await.unwrap()).len(), 4, "part-1 is a string prefix of part-10");
    assert_eq!(keys(&store.list(&k("rec/part-1/cam.webm/00000")).await.unwrap()).len(), 3);
    assert!(store.list(&k("nothing/")).await.unwrap().is_empty());
    assert!(store.list("").await.unwrap().len() >= 6, "an empty prefix lists everything");

    // Ranges, on a 1 MB object.
    let big = Bytes::from(data(1_000_000, 2));
    store.put(&k("rec/composed.mp4"), big.clone(), "video/mp4").await.unwrap();
    let (total, start, end, content_type, bytes) = read(store, &k("rec/composed.mp4"), Some((0..=1).into())).await;
    assert_eq!((total, start, end, content_type.as_str()), (1_000_000, 0, 1, "video/mp4"));
    assert_eq!(bytes, big.slice(0..2), "the first bytes");
    let (_, start, end, _, bytes) = read(store, &k("rec/composed.mp4"), Some((400_000..=499_999).into())).await;
    assert_eq!((start, end), (400_000, 499_999));
    assert_eq!(bytes, big.slice(400_000..500_000), "the middle");
    let (_, start, end, _, bytes) = read(store, &k("rec/composed.mp4"), Some((999_990..).into())).await;
    assert_eq!((start, end), (999_990, 999_999));
    assert_eq!(bytes, big.slice(999_990..), "an open end");
    let (_, start, end, _, bytes) = read(store, &k("rec/composed.mp4"), Some((999_000..=5_000_000).into())).await;
    assert_eq!((start, end, bytes.len()), (999_000, 999_999, 1000), "an end past the object is clamped");
    for unsatisfiable in [ByteRange::from_start(1_000_000), ByteRange::inclusive(2_000_000, 2_000_010)] {
        match store.get(&k("rec/composed.mp4"), Some(unsatisfiable)).await {
            Err(ObjectError::RangeNotSatisfiable { total }) => assert_eq!(total, 1_000_000),
            other => panic!("{unsatisfiable:?}: expected RangeNotSatisfiable, got {other:?}"),
        }
    }
    match store.get(&k("rec/composed.mp4"), Some(ByteRange::inclusive(10, 5))).await {
        Err(ObjectError::RangeNotSatisfiable { total: 1_000_000 }) => {}
        other => panic!("an end before the start: expected RangeNotSatisfiable, got {other:?}"),
    }

    // NotFound.
    for missing in [k("rec/missing"), k("rec/part-1"), k("rec/part-1/cam.webm")] {
        assert!(store.head(&missing).await.unwrap().is_none(), "{missing}");
        match store.get(&missing, None).await {
            Err(e @ ObjectError::NotFound(_)) => assert!(!e.is_retryable()),
            other => panic!("get {missing}: expected NotFound, got {other:?}"),
        }
        match store.get(&missing, Some((0..=1).into())).await {
            Err(ObjectError::NotFound(_)) => {}
            other => panic!("ranged get {missing}: expected NotFound, got {other:?}"),
        }
        match store.get_to_file(&missing, &scratch.join("missing.out")).await {
            Err(ObjectError::NotFound(_)) => {}
            other => panic!("get_to_file {missing}: expected NotFound, got {other:?}"),
        }
        assert!(!scratch.join("missing.out").exists());
    }

    // Invalid keys are refused by every method, before anything is touched.
    let source = scratch.join("small.bin");
    std::fs::write(&source, data(1000, 3)).unwrap();
    for bad in ["", "/etc/passwd", "../escape", "a/../../escape", "a//b", "a/", "./a", "a\0b", "a\\..\\b", ".hidden"] {
        let is_invalid = |r: Result<(), ObjectError>| matches!(r, Err(ObjectError::InvalidKey(_)));
        assert!(is_invalid(store.put(bad, Bytes::from_static(b"x"), "text/plain").await), "put {bad:?}");
        assert!(is_invalid(store.put_file(bad, &source, "text/plain").await.map(|_| ())), "put_file {bad:?}");
        assert!(is_invalid(store.get_to_file(bad, &scratch.join("bad.out")).await.map(|_| ())), "get_to_file {bad:?}");
        assert!(is_invalid(store.get(bad, None).await.map(|_| ())), "get {bad:?}");
        assert!(is_invalid(store.head(bad).await.map(|_| ())), "head {bad:?}");
        if bad == "a/" {
            continue; // a valid prefix
        }
        if !bad.is_empty() {
            assert!(is_invalid(store.list(bad).await.map(|_| ())), "list {bad:?}");
        }
        assert!(is_invalid(store.delete_prefix(bad).await.map(|_| ())), "delete_prefix {bad:?}");
    }
    assert!(matches!(store.list("../").await, Err(ObjectError::InvalidKey(_))));
    assert!(matches!(store.delete_prefix("").await, Err(ObjectError::InvalidKey(_))), "never delete everything");
    let too_long = format!("{base}{}", "k".repeat(1100));
    assert!(matches!(store.put(&too_long, Bytes::new(), "text/plain").await, Err(ObjectError::InvalidKey(_))));
    // A key with spaces and other URL-special characters round-trips.
    let odd = k("rec/speaker A+B=c@d,e.vtt");
    store.put(&odd, Bytes::from_static(b"WEBVTT\n"), "text/vtt").await.unwrap();
    assert_eq!(read(store, &odd, None).await.4, Bytes::from_static(b"WEBVTT\n"));

    // put_file below the multipart threshold, get_to_file back (creating the parent directory).
    assert_eq!(store.put_file(&k("files/small.bin"), &source, "application/octet-stream").await.unwrap(), 1000);
    let out = scratch.join("down/small.bin");
    assert_eq!(store.get_to_file(&k("files/small.bin"), &out).await.unwrap(), 1000);
    assert_eq!(std::fs::read(&out).unwrap(), data(1000, 3));

    // A ~40 MiB file: multipart on S3 (5 parts of 8 MiB), ranges across a part boundary.
    let large_len = 40 * 1024 * 1024 + 12_345;
    assert!(large_len as u64 > MULTIPART_THRESHOLD);
    let large = data(large_len, 4);
    let large_path = scratch.join("large.webm");
    std::fs::write(&large_path, &large).unwrap();
    let t = Instant::now();
    assert_eq!(store.put_file(&k("files/large.webm"), &large_path, "video/webm").await.unwrap(), large_len as u64);
    eprintln!("{}: put_file of {large_len} bytes in {:?}", store.describe(), t.elapsed());
    let meta = store.head(&k("files/large.webm")).await.unwrap().unwrap();
    assert_eq!((meta.size, meta.content_type.as_deref()), (large_len as u64, Some("video/webm")));
    let boundary = MULTIPART_PART_SIZE;
    let (_, start, end, _, bytes) =
        read(store, &k("files/large.webm"), Some((boundary - 10..=boundary + 9).into())).await;
    assert_eq!((start, end), (boundary - 10, boundary + 9));
    assert_eq!(&bytes[..], &large[(boundary - 10) as usize..(boundary + 10) as usize], "across a part boundary");
    let (_, _, _, _, bytes) = read(store, &k("files/large.webm"), Some((large_len as u64 - 100..).into())).await;
    assert_eq!(&bytes[..], &large[large_len - 100..], "the tail of the last part");
    let large_out = scratch.join("down/large.webm");
    let t = Instant::now();
    assert_eq!(store.get_to_file(&k("files/large.webm"), &large_out).await.unwrap(), large_len as u64);
    eprintln!("{}: get_to_file of {large_len} bytes in {:?}", store.describe(), t.elapsed());
    assert!(std::fs::read(&large_out).unwrap() == large, "the downloaded file is the uploaded one");
    let (total, _, _, _, bytes) = read(store, &k("files/large.webm"), None).await;
    assert_eq!(total, large_len as u64);
    assert!(bytes[..] == large[..], "the streamed object is the uploaded file");
    // get_to_file replaces an existing file and leaves no temporary file behind.
    assert_eq!(store.get_to_file(&k("files/small.bin"), &large_out).await.unwrap(), 1000);
    let mut names: Vec<_> = std::fs::read_dir(scratch.join("down")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["large.webm", "small.bin"]);

    // delete_prefix: a string prefix, counts what it deleted, leaves the rest.
    assert_eq!(store.delete_prefix(&k("rec/part-1/")).await.unwrap(), 3);
    assert!(store.head(&k("rec/part-1/cam.webm/000001")).await.unwrap().is_none());
    assert!(store.head(&k("rec/part-10/x")).await.unwrap().is_some(), "part-10 is not under part-1/");
    assert_eq!(store.delete_prefix(&k("rec/part-1/")).await.unwrap(), 0, "deleting again finds nothing");
    assert_eq!(store.delete_prefix(base).await.unwrap(), 7);
    assert!(store.list(base).await.unwrap().is_empty());
    assert!(matches!(store.get(&k("files/large.webm"), None).await, Err(ObjectError::NotFound(_))));
    eprintln!("{}: contract in {:?}", store.describe(), started.elapsed());
}

fn run_prefix() -> String {
    format!("run-{}/", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn local_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let store = LocalStore::new(root.clone());
    assert_eq!(store.describe(), format!("file://{}", root.display()));
    contract(&store, &run_prefix(), &scratch).await;

    // Nothing escaped the root: only `objects` and `scratch` are in the temporary directory.
    let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["objects", "scratch"]);
}

#[tokio::test]
async fn local_store_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().to_owned());
    store.put("recordings/r1/part-1/cam.webm/000007", Bytes::from_static(b"chunk"), "video/webm").await.unwrap();
    // Plain files under the root; the content type in a hidden sidecar; no temporary files left.
    let track_dir = dir.path().join("recordings/r1/part-1/cam.webm");
    assert_eq!(std::fs::read(track_dir.join("000007")).unwrap(), b"chunk");
    let mut names: Vec<_> =
        std::fs::read_dir(&track_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [".000007.content-type", "000007"]);
    // Without a sidecar the content type comes from the extension.
    std::fs::write(dir.path().join("recordings/r1/plain.mp4"), b"mp4").unwrap();
    assert_eq!(
        store.head("recordings/r1/plain.mp4").await.unwrap().unwrap().content_type.as_deref(),
        Some("video/mp4")
    );
    // Stray hidden files (an interrupted write) are not objects.
    std::fs::write(track_dir.join(".000008.tmp-1234"), b"partial").unwrap();
    assert_eq!(
        keys(&store.list("recordings/").await.unwrap()),
        ["recordings/r1/part-1/cam.webm/000007", "recordings/r1/plain.mp4"]
    );
    // A symbolic link out of the root is not followed by list.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("recordings/link")).unwrap();
    assert_eq!(store.list("recordings/").await.unwrap().len(), 2);
    // A key cannot be both an object and a prefix on a filesystem: a clear error, nothing lost.
    match store.put("recordings/r1/part-1/cam.webm", Bytes::from_static(b"x"), "video/webm").await {
        Err(ObjectError::Failed(message)) => assert!(message.contains("prefix"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(store.head("recordings/r1/part-1/cam.webm/000007").await.unwrap().is_some());
    // delete_prefix removes emptied directories (and sidecars), not the root.
    std::fs::remove_file(track_dir.join(".000008.tmp-1234")).unwrap();
    assert_eq!(store.delete_prefix("recordings/r1/").await.unwrap(), 2);
    assert!(!dir.path().join("recordings/r1/part-1").exists());
    assert!(dir.path().exists());
    assert!(outside.path().join("secret").exists());
}

// --- S3 ---------------------------------------------------------------------------------------

struct S3Env {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
}

fn s3_env() -> S3Env {
    let var = |name: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
            panic!(
                "{name} is not set: the S3 object store tests need a real S3 server. Run them through the \
                 harness, which starts a throwaway SeaweedFS and sets PARLEY_TEST_S3_ENDPOINT, \
                 PARLEY_TEST_S3_ACCESS_KEY, PARLEY_TEST_S3_SECRET_KEY and PARLEY_TEST_S3_REGION:\n    \
                 scripts/services.sh cargo test -p parley-recording --test object_store"
            )
        })
    };
    S3Env {
        endpoint: var("PARLEY_TEST_S3_ENDPOINT"),
        access_key: var("PARLEY_TEST_S3_ACCESS_KEY"),
        secret_key: var("PARLEY_TEST_S3_SECRET_KEY"),
        region: var("PARLEY_TEST_S3_REGION"),
    }
}

fn s3_config(env: &S3Env, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(env.endpoint.clone()),
        region: env.region.clone(),
        bucket: bucket.to_owned(),
        access_key: env.access_key.clone(),
        secret_key: env.secret_key.clone(),
        path_style: true,
        ..Default::default()
    }
}

fn fresh_bucket() -> String {
    format!("parley-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// A rusoto client of its own, to check what the store did independently of it.
fn raw_client(env: &S3Env) -> rusoto_s3::S3Client {
    rusoto_s3::S3Client::new_with(
        rusoto_core::HttpClient::new().unwrap(),
        rusoto_core::credential::StaticProvider::new_minimal(env.access_key.clone(), env.secret_key.clone()),
        rusoto_core::Region::Custom { name: env.region.clone(), endpoint: env.endpoint.clone() },
    )
}

#[tokio::test]
async fn s3_store_contract() {
    let env = s3_env();
    let bucket = fresh_bucket();
    let store = S3Store::new(s3_config(&env, &bucket)).unwrap();
    assert_eq!(store.describe(), format!("s3://{bucket}@{}", env.endpoint.trim_end_matches('/')));
    store.ensure_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = run_prefix();

    // Multipart really used for a large file: the ETag of a multipart object ends in -<parts>.
    let large = dir.path().join("multipart.bin");
    std::fs::write(&large, data(40 * 1024 * 1024, 9)).unwrap();
    store.put_file(&format!("{base}multipart.bin"), &large, "application/octet-stream").await.unwrap();
    let head = raw_client(&env)
        .head_object(rusoto_s3::HeadObjectRequest {
            bucket: bucket.clone(),
            key: format!("{base}multipart.bin"),
            ..Default::default()
        })
        .await
        .unwrap();
    let etag = head.e_tag.unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-5"), "a 5-part multipart upload, got ETag {etag}");
    // No multipart upload is left open.
    let uploads = raw_client(&env)
        .list_multipart_uploads(rusoto_s3::ListMultipartUploadsRequest { bucket: bucket.clone(), ..Default::default() })
        .await
        .unwrap();
    assert!(uploads.uploads.unwrap_or_default().is_empty());
    store.delete_prefix(&base).await.unwrap();

    contract(&store, &base, dir.path()).await;
}

#[tokio::test]
async fn s3_bucket_created_when_missing() {
    let env = s3_env();
    let bucket = fresh_bucket();
    let store = S3Store::new(s3_config(&env, &bucket)).unwrap();
    assert!(!store.bucket_exists().await.unwrap());
    match store.list("").await {
        Err(ObjectError::Failed(message)) => assert!(message.contains("does not exist"), "{message}"),
        other => panic!("listing a missing bucket: expected Failed, got {other:?}"),
    }
    match store.put("a/b", Bytes::from_static(b"x"), "text/plain").await {
        Err(e) => assert!(!e.is_retryable(), "a missing bucket is not retryable: {e}"),
        Ok(()) => panic!("the server must not create buckets implicitly (SeaweedFS -s3.autoCreateBucket=false)"),
    }
    store.ensure_bucket().await.unwrap();
    store.ensure_bucket().await.unwrap(); // idempotent
    assert!(store.bucket_exists().await.unwrap());
    let buckets = raw_client(&env).list_buckets().await.unwrap().buckets.unwrap_or_default();
    assert!(buckets.iter().any(|b| b.name.as_deref() == Some(bucket.as_str())), "the server lists {bucket}");
    store.put("a/b", Bytes::from_static(b"x"), "text/plain").await.unwrap();
    assert_eq!(store.list("").await.unwrap().len(), 1);
    // Two stores racing to create the same bucket both succeed.
    let racing = fresh_bucket();
    let (a, b) = (S3Store::new(s3_config(&env, &racing)).unwrap(), S3Store::new(s3_config(&env, &racing)).unwrap());
    let (ra, rb) = tokio::join!(a.ensure_bucket(), b.ensure_bucket());
    ra.unwrap();
    rb.unwrap();
}

#[tokio::test]
async fn s3_wrong_secret_key_is_denied() {
    let env = s3_env();
    let bucket = fresh_bucket();
    S3Store::new(s3_config(&env, &bucket)).unwrap().ensure_bucket().await.unwrap();
    let wrong = S3Store::new(S3Config { secret_key: "not-the-secret".to_owned(), ..s3_config(&env, &bucket) }).unwrap();
    let t = Instant::now();
    match wrong.put("a/b", Bytes::from_static(b"x"), "text/plain").await {
        Err(e @ ObjectError::Denied(_)) => {
            assert!(!e.is_retryable());
            let message = e.to_string();
            eprintln!("wrong secret key: {message}");
            assert!(message.contains("403") && message.contains("SignatureDoesNotMatch"), "{message}");
            assert!(message.contains("secret key"), "the message says what to check: {message}");
            assert!(!message.contains("not-the-secret"), "the secret is not in the message");
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    for result in [
        wrong.get("a/b", None).await.map(|_| ()),
        wrong.head("a/b").await.map(|_| ()),
        wrong.list("").await.map(|_| ()),
        wrong.ensure_bucket().await,
    ] {
        match result {
            Err(e @ ObjectError::Denied(_)) => assert!(!e.is_retryable()),
            other => panic!("expected Denied, got {other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(5), "refused promptly: {:?}", t.elapsed());
}

#[tokio::test]
async fn s3_unreachable_endpoint_is_unavailable() {
    let env = s3_env();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = S3Store::new(S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..s3_config(&env, "parley-unreachable")
    })
    .unwrap();
    let t = Instant::now();
    let results = [
        store.put("a/b", Bytes::from_static(b"x"), "text/plain").await,
        store.get("a/b", None).await.map(|_| ()),
        store.head("a/b").await.map(|_| ()),
        store.list("").await.map(|_| ()),
        store.ensure_bucket().await,
    ];
    for result in results {
        match result {
            Err(e @ ObjectError::Unavailable(_)) => {
                eprintln!("closed port: {e}");
                assert!(e.is_retryable(), "{e}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(5), "a closed port fails fast: {:?}", t.elapsed());
}

#[tokio::test]
async fn s3_silent_server_times_out() {
    let env = s3_env();
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store = S3Store::new(S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        timeout: Duration::from_millis(500),
        ..s3_config(&env, "parley-silent")
    })
    .unwrap();
    let t = Instant::now();
    match store.get("a/b", Some((0..=9).into())).await {
        Err(e @ ObjectError::Unavailable(_)) => assert!(e.is_retryable() && e.to_string().contains("500ms"), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let elapsed = t.elapsed();
    assert!(elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    silent.abort();
}
