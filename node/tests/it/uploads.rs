//! What a job names must be what was uploaded: content a node merely has
//! compiled, or never received, and sizes that do not match what is stored
//! are refused at submission with a 400 naming the input.

use std::time::Duration;

use agora_protocol::ContentId;

use crate::common::{AGORA, NodeProcess, rt};
use crate::executor::CAT;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A job spec with `module` and one input `(name, id, size)`.
fn spec(module: ContentId, module_size: usize, input: (&str, ContentId, usize)) -> serde_json::Value {
    serde_json::json!({"spec": {
        "module": module, "module_size": module_size,
        "inputs": [{"name": input.0, "id": input.1, "size": input.2}],
        "fuel": 1_000_000, "memory": 1048576, "deadline_ms": 60000, "max_price_micros": 1, "replicas": 1
    }})
}

#[test]
fn an_input_that_was_never_uploaded_is_refused_even_when_compiled_here() {
    let node = NodeProcess::start(&[]);
    let base = format!("http://{}", node.info.api);
    let token = node.info.token.clone();
    // The calibration kernel: this node compiled it when it measured its
    // capacity, but its bytes were never uploaded to it.
    let compiled = wat::parse_str(agora_node::executor::KERNEL_WAT).unwrap();
    let compiled_id = ContentId::of(&compiled);

    rt().block_on(async {
        let c = http();
        let module = wat::parse_str(CAT).unwrap();
        let uploaded = node.client().put_content(module.clone()).await.unwrap();
        let input = node.client().put_content(b"hello".to_vec()).await.unwrap();
        let submit = |body: serde_json::Value| {
            let c = c.clone();
            let url = format!("{base}/v1/jobs");
            let token = token.clone();
            async move {
                let r = c.post(url).bearer_auth(token).json(&body).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };

        // The compiled module's id as an input: nothing could send it.
        let (status, text) = submit(spec(
            uploaded.id,
            module.len(),
            ("a", compiled_id, compiled.len()),
        ))
        .await;
        assert_eq!(status, 400, "{text}");
        assert!(
            text.contains("input a") && text.contains("upload it first"),
            "{text}"
        );
        // An id never seen at all.
        let (status, text) = submit(spec(uploaded.id, module.len(), ("b", ContentId([7; 32]), 1))).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("input b"), "{text}");
        // The compiled module as the job's module.
        let (status, text) = submit(spec(compiled_id, compiled.len(), ("c", input.id, 5))).await;
        assert_eq!(status, 400, "{text}");
        assert!(
            text.contains("module") && text.contains("upload it first"),
            "{text}"
        );

        // What was uploaded, with its true sizes, is accepted.
        let (status, text) = submit(spec(uploaded.id, module.len(), ("d", input.id, 5))).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(node.client().jobs().await.unwrap().len(), 1);
    });
}

#[test]
fn a_declared_size_that_differs_from_the_upload_is_refused() {
    let node = NodeProcess::start(&[]);
    rt().block_on(async {
        let module = wat::parse_str(CAT).unwrap();
        let m = node.client().put_content(module.clone()).await.unwrap();
        let input = node.client().put_content(b"hello".to_vec()).await.unwrap();
        let c = http();
        let url = format!("http://{}/v1/jobs", node.info.api);
        for (body, what) in [
            (spec(m.id, module.len(), ("tile-7", input.id, 0)), "input tile-7"),
            (spec(m.id, module.len(), ("tile-7", input.id, 6)), "input tile-7"),
            (spec(m.id, 1, ("tile-7", input.id, 5)), "module"),
            // The empty input needs no upload, but it is empty.
            (spec(m.id, module.len(), ("e", ContentId::of(&[]), 3)), "input e"),
        ] {
            let r = c
                .post(&url)
                .bearer_auth(&node.info.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 400, "{text}");
            assert!(
                text.contains(what) && text.contains("bytes were uploaded"),
                "{text}"
            );
        }
        assert!(node.client().jobs().await.unwrap().is_empty());
    });
}

/// `agora job submit ARGS… --data-dir DIR` with a marker in its environment.
fn submit(node: &NodeProcess, args: &[&str]) -> std::process::Output {
    std::process::Command::new(AGORA)
        .args(["job", "submit"])
        .args(args)
        .arg("--data-dir")
        .arg(node.dir.path())
        .env("AGORA_TEST_SECRET", "hunter2-in-the-environment")
        .env_remove("AGORA_DATA_DIR")
        .output()
        .unwrap()
}

/// Every blob the node stores, concatenated.
/// Every byte the node wrote: its blob files and its database (where small
/// blobs live, uncompressed).
fn stored_bytes(node: &NodeProcess) -> Vec<u8> {
    fn read_all(dir: &std::path::Path, all: &mut Vec<u8>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                read_all(&p, all);
            } else if let Ok(b) = std::fs::read(&p) {
                all.extend(b);
            }
        }
    }
    let mut all = Vec::new();
    read_all(&node.dir.path().join("content"), &mut all);
    read_all(&node.dir.path().join(agora_node::store::STORE_DIR), &mut all);
    all
}

#[cfg(target_os = "linux")]
#[test]
fn links_to_secrets_among_the_inputs_are_refused_and_nothing_leaves() {
    let node = NodeProcess::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let module = work.path().join("cat.wat");
    std::fs::write(&module, CAT).unwrap();
    let module = module.to_str().unwrap();
    let secret = work.path().join("id_ed25519");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    let inputs = work.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("a.json"), "{}").unwrap();
    std::os::unix::fs::symlink(&secret, inputs.join("key.json")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", inputs.join("env.json")).unwrap();
    let dir = inputs.to_str().unwrap();

    // A link is refused, naming it and saying what to do.
    let out = submit(&node, &[module, "--inputs", dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("env.json") && err.contains("--follow-symlinks"),
        "{err}"
    );
    // Asked to follow links, the one to /proc is still refused.
    let out = submit(&node, &[module, "--inputs", dir, "--follow-symlinks"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("env.json") && err.contains("/proc"), "{err}");
    let out = submit(&node, &[module, "--input", "/proc/self/environ"]);
    assert_eq!(out.status.code(), Some(1));
    // Nothing was uploaded, the environment least of all.
    let metrics = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(node.client().metrics())
        .expect("the metrics");
    assert!(
        metrics.lines().any(|l| l == "agora_content_bytes 0"),
        "content was uploaded"
    );
    let stored = String::from_utf8_lossy(&stored_bytes(&node)).into_owned();
    assert!(!stored.contains("OPENSSH") && !stored.contains("hunter2"));

    // Following a link to an ordinary file is what --follow-symlinks is for.
    std::fs::remove_file(inputs.join("env.json")).unwrap();
    let out = submit(&node, &[module, "--inputs", dir, "--follow-symlinks", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = String::from_utf8_lossy(&stored_bytes(&node)).into_owned();
    assert!(stored.contains("OPENSSH"), "the followed link was uploaded");
    assert!(!stored.contains("hunter2"), "the environment never is");
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_everything_the_node_writes_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A data dir left world-readable by an older version.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("content")).unwrap();
    std::fs::set_permissions(dir.path().join("content"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = NodeProcess::start_in(dir, &[]);
    rt().block_on(async {
        let module = wat::parse_str(CAT).unwrap();
        let m = node.client().put_content(module.clone()).await.unwrap();
        let input = node
            .client()
            .put_content(b"a private input".to_vec())
            .await
            .unwrap();
        let r = http()
            .post(format!("http://{}/v1/jobs", node.info.api))
            .bearer_auth(&node.info.token)
            .json(&spec(m.id, module.len(), ("a", input.id, 15)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let root = node.dir.path().to_owned();
    assert_eq!(mode(&root), 0o700, "the data dir is tightened");
    let mut files = 0;
    let mut pending = vec![root.clone()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            // The test's own log of the node's stderr.
            if p == root.join("node.log") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                pending.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
                files += 1;
            }
        }
    }
    assert!(files >= 4, "key, node.json, two blobs, the database: {files}");
    for f in ["identity.key", "node.json"] {
        assert_eq!(mode(&root.join(f)), 0o600, "{f}");
    }
}
