//! The dashboard in a real browser: headless Chromium, driven over
//! WebDriver, against a 4-node testnet. It logs in with a one-time code,
//! sees every node (one of them joining while the page is open), shows what
//! hostile peers advertise as text, submits the Mandelbrot job from the page
//! (module, tiles and reduce module uploaded by the browser), watches its
//! tiles reach verified and the finished image appear, pauses and resumes a
//! provider from its owner's view, and saves a screenshot of each view.
//!
//! Skips, naming the Debian packages, where Chromium or its driver is
//! absent; `.ci/run` installs them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_testnet::artifacts;
use agora_testnet::process::{NodeSpec, Testnet};
use agora_testnet::workload::mandelbrot;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{Value, json};

const PACKAGES: &str = "Debian's chromium and chromium-driver packages";

/// What a hostile owner puts in its labels: markup that would run script
/// if the page parsed it.
const SCRIPT_LABEL: &str = "<script>window.__xss=1</script>";
const IMG_LABEL: &str = "\"><img src=x onerror=window.__xss=2>";

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().find_map(|c| {
        let p = Path::new(c);
        if p.is_absolute() {
            p.is_file().then(|| p.to_path_buf())
        } else {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(c))
                    .find(|p| p.is_file())
            })
        }
    })
}

/// Chromium and chromedriver, or why not.
fn chromium() -> Result<(PathBuf, PathBuf), String> {
    let browser = find(&["chromium", "chromium-browser", "/usr/bin/chromium"])
        .ok_or_else(|| format!("no chromium: needs {PACKAGES}"))?;
    let driver = find(&["chromedriver", "/usr/bin/chromedriver"])
        .ok_or_else(|| format!("no chromedriver: needs {PACKAGES}"))?;
    Ok((browser, driver))
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(path: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(driver: &Driver, chromium: &Path) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(b) => return b,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

/// Evaluates `expr` in the page until it is truthy; its value.
async fn wait_for(b: &Browser, expr: &str, timeout: Duration, what: &str) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        match b.execute(&format!("return ({expr});"), vec![]).await {
            Ok(v) if truthy(&v) => return v,
            Ok(v) => last = v,
            Err(e) => last = Value::String(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = b
        .execute("return document.body.innerText.slice(0, 3000)", vec![])
        .await
        .unwrap_or_default();
    panic!(
        "{what}: `{expr}` still {last} after {timeout:?}; the page says:\n{}",
        page.as_str().unwrap_or("")
    );
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

async fn screenshot(b: &Browser, dir: &Path, name: &str) {
    let png = b.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "screenshots are PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is saved");
}

#[test]
fn the_dashboard_in_chromium_logs_in_shows_the_network_runs_a_job_and_escapes_what_peers_say() {
    let (chromium, chromedriver) = match chromium() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("skipping the dashboard test: {why}");
            return;
        }
    };
    let _turn = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let rt = crate::runtime();
    rt.block_on(async {
        let agora = artifacts::agora_binary().unwrap();
        let modules = artifacts::example_modules().unwrap();
        let net_dir = dir.path().join("net");
        std::fs::create_dir_all(&net_dir).unwrap();
        let mut net = Testnet::new(agora, &net_dir).unwrap();
        let labels = |k: &str, v: &str| {
            format!("[provider.labels]\n{k} = {}\n", toml_string(v))
        };
        net.start_all(vec![
            NodeSpec::requester("eu/a").with_slots(1),
            NodeSpec::provider("eu/a").with_slots(1).with_config(&labels("note", SCRIPT_LABEL)),
            NodeSpec::provider("eu/a").with_slots(1).with_config(&labels("bad", IMG_LABEL)),
        ])
        .await
        .unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();
        let requester = net.node(0).client.clone();

        let driver = Driver::start(&chromedriver);
        let b = connect(&driver, &chromium).await;

        // A page without a session shows only how to log in.
        let api = net.node(0).info.api.clone();
        b.goto(&format!("http://{api}/")).await.unwrap();
        let text = wait_for(&b, "document.body.textContent", Duration::from_secs(10), "login page").await;
        assert!(text.as_str().unwrap().contains("agora dashboard"), "{text}");
        assert!(
            b.find(Locator::Id("nodes")).await.is_err(),
            "no view without a session"
        );

        // Log in with a one-time code: the link leads to the network view.
        let code = requester.dashboard_code(None).await.unwrap();
        b.goto(&code.url).await.unwrap();
        let url = b.current_url().await.unwrap();
        assert_eq!(url.path(), "/", "the login redirects to the page");
        assert!(url.query().is_none(), "the code is gone from the address bar");
        wait_for(&b, "document.querySelectorAll('#nodes [data-peer]').length === 3", Duration::from_secs(20), "three nodes").await;

        // A fourth node joins while the page is open: it appears within a
        // second of the node itself knowing it.
        let i = net.start(NodeSpec::provider("eu/a").with_slots(1)).await.unwrap();
        let newcomer = net.node(i).id().to_string();
        let t0 = loop {
            if requester.peers(None).await.unwrap().iter().any(|p| p.peer_id.to_string() == newcomer) {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        wait_for(
            &b,
            &format!("document.querySelector('#nodes [data-peer=\"{newcomer}\"]')"),
            Duration::from_secs(10),
            "the new node",
        )
        .await;
        let shown_after = t0.elapsed();
        eprintln!("the new node was on the page {} ms after the node knew it", shown_after.as_millis());
        assert!(shown_after < Duration::from_secs(1), "{shown_after:?}");
        let ids: Vec<String> = serde_json::from_value(
            b.execute(
                "return [...document.querySelectorAll('#nodes [data-peer]')].map(e => e.title)",
                vec![],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        let mut want: Vec<String> = net.nodes().iter().map(|n| n.id().to_string()).collect();
        let mut got = ids.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "every node, each with its full peer id in the title");

        // What hostile peers advertise is shown as text and runs nothing.
        let label_texts: Vec<String> = serde_json::from_value(
            b.execute("return [...document.querySelectorAll('.label')].map(e => e.textContent)", vec![])
                .await
                .unwrap(),
        )
        .unwrap();
        for hostile in [format!("note={SCRIPT_LABEL}"), format!("bad={IMG_LABEL}")] {
            assert!(label_texts.contains(&hostile), "{hostile} not shown as text in {label_texts:?}");
        }
        let injected = b
            .execute(
                "return [window.__xss === undefined, document.querySelectorAll('#view img[src=\"x\"], #view script').length]",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(injected, json!([true, 0]), "no script ran and no element was injected");
        screenshot(&b, &shots, "network").await;

        // Submit the Mandelbrot job from the page: module, tiles and reduce
        // module uploaded by the browser.
        let (width, height, count) = (480, 320, 12);
        let files = dir.path().join("job");
        std::fs::create_dir_all(files.join("tiles")).unwrap();
        let module = files.join("mandelbrot.wasm");
        std::fs::write(&module, modules.read("mandelbrot").unwrap()).unwrap();
        let reduce = files.join("mandelbrot-reduce.wasm");
        std::fs::write(&reduce, modules.read("mandelbrot-reduce").unwrap()).unwrap();
        let mut tiles = Vec::new();
        for t in mandelbrot::inputs(width, height, count, 300) {
            let p = files.join("tiles").join(&t.name);
            std::fs::write(&p, &t.bytes).unwrap();
            tiles.push(p.display().to_string());
        }
        b.goto(&format!("http://{api}/#jobs")).await.unwrap();
        b.wait().for_element(Locator::Id("module")).await.unwrap();
        let send = |id: &'static str, text: String| {
            let b = b.clone();
            async move { b.find(Locator::Id(id)).await.unwrap().send_keys(&text).await.unwrap() }
        };
        send("module", module.display().to_string()).await;
        send("inputs", tiles.join("\n")).await;
        send("reduce", reduce.display().to_string()).await;
        b.find(Locator::Id("submit-button")).await.unwrap().click().await.unwrap();
        let hash = wait_for(&b, "location.hash.startsWith('#jobs/') && location.hash", Duration::from_secs(30), "the submitted job").await;
        let job_id = hash.as_str().unwrap().trim_start_matches("#jobs/").to_owned();
        wait_for(
            &b,
            &format!("document.querySelectorAll('#grid .cell.ph-verified').length === {count}"),
            Duration::from_secs(180),
            "every tile verified",
        )
        .await;
        let (w, h) = {
            let v = wait_for(
                &b,
                "document.getElementById('reduced').complete && document.getElementById('reduced').naturalWidth > 0 && [document.getElementById('reduced').naturalWidth, document.getElementById('reduced').naturalHeight]",
                Duration::from_secs(60),
                "the finished image",
            )
            .await;
            (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
        };
        assert_eq!((w, h), (u64::from(width), u64::from(height)), "the finished image is the one asked for");
        wait_for(&b, &format!("document.getElementById('tiles').dataset.tiles === '{count}'"), Duration::from_secs(30), "every tile drawn").await;
        let status = requester.job(&job_id.parse().unwrap()).await.unwrap();
        assert_eq!(status.counts.verified, count as usize, "the API agrees: every task verified");
        let png = requester.get_content(&status.reduced.expect("a reduced result")).await.unwrap();
        mandelbrot::check_png(&png, width, height).unwrap();
        screenshot(&b, &shots, "job").await;

        // One task: who ran it, how it was placed, its receipt.
        b.find(Locator::Css("#grid .cell")).await.unwrap().click().await.unwrap();
        wait_for(&b, "document.querySelector('#task .decision') && document.querySelector('#task .receipt')", Duration::from_secs(10), "the task's placement and receipt").await;
        screenshot(&b, &shots, "task").await;

        // The ledger shows what the job paid.
        b.goto(&format!("http://{api}/#ledger")).await.unwrap();
        wait_for(&b, "document.querySelectorAll('table.ledger tbody tr').length > 0", Duration::from_secs(10), "ledger entries").await;
        screenshot(&b, &shots, "ledger").await;

        // A provider's owner: log in to one that ran tiles, see what it
        // earned, pause and resume it.
        let earner = status
            .providers
            .iter()
            .find(|p| p.paid.0 > 0)
            .and_then(|p| net.by_id(&p.peer_id))
            .expect("a provider was paid");
        let provider = earner.client.clone();
        let code = provider.dashboard_code(None).await.unwrap();
        b.goto(&code.url).await.unwrap();
        let papi = earner.info.api.clone();
        b.goto(&format!("http://{papi}/#machine")).await.unwrap();
        wait_for(&b, "document.getElementById('pause')", Duration::from_secs(10), "the pause button").await;
        wait_for(&b, "document.getElementById('earned')", Duration::from_secs(20), "the earnings chart").await;
        screenshot(&b, &shots, "machine").await;
        b.find(Locator::Id("pause")).await.unwrap().click().await.unwrap();
        wait_for(&b, "document.getElementById('resume')", Duration::from_secs(10), "paused").await;
        assert!(provider.owner().await.unwrap().paused, "the page paused the node");
        b.find(Locator::Id("resume")).await.unwrap().click().await.unwrap();
        wait_for(&b, "document.getElementById('pause')", Duration::from_secs(10), "resumed").await;
        assert!(!provider.owner().await.unwrap().paused, "the page resumed the node");

        // The first node's session still holds: sessions are per node.
        b.goto(&format!("http://{api}/#network")).await.unwrap();
        wait_for(&b, "document.querySelectorAll('#nodes [data-peer]').length === 4", Duration::from_secs(10), "still logged in to node-0").await;
        eprintln!("screenshots in {}", shots.display());
        b.close().await.unwrap();
    });
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
