//! The local API under bad input: no token, a wrong token, malformed JSON,
//! huge bodies, unknown ids. Each gets a clear 4xx and nothing is stored.

use std::time::Duration;

use crate::common::{NodeProcess, rt};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn bad_requests_get_clear_errors_and_store_nothing() {
    let node = NodeProcess::start(&[]);
    let base = format!("http://{}", node.info.api);
    let token = node.info.token.clone();
    let rt = rt();
    rt.block_on(async {
        let c = http();
        // No token, wrong token.
        let r = c.get(format!("{base}/v1/status")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body = r.text().await.unwrap();
        assert!(body.contains("missing bearer token"), "{body}");
        let r = c
            .get(format!("{base}/v1/status"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("wrong bearer token"));
        let r = c
            .put(format!("{base}/v1/content"))
            .bearer_auth("nope")
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "unauthenticated uploads are refused");

        // Malformed JSON, wrong shapes, unknown fields' types.
        for body in ["{", "[]", "{\"spec\": 3}", "null", "\u{0}"] {
            let r = c
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(&token)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "body {body:?}");
            let text = r.text().await.unwrap();
            assert!(text.contains("malformed JSON"), "{text}");
        }
        // A well-formed job naming content the node does not hold.
        let spec = serde_json::json!({"spec": {
            "module": "00".repeat(32), "module_size": 10,
            "inputs": [{"name": "a", "id": "11".repeat(32), "size": 1}], "fuel": 1, "memory": 1048576,
            "deadline_ms": 1000, "max_price_micros": 1, "replicas": 1
        }});
        let r = c
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&token)
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("upload it first"));

        // A JSON body over the 16 MiB limit.
        let huge = vec![b' '; 17 * 1024 * 1024];
        let r = c
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&token)
            .body(huge)
            .send()
            .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 413),
            Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        }
        // An upload over the 64 MiB blob limit.
        let huge = vec![0u8; 64 * 1024 * 1024 + 1];
        let r = c
            .put(format!("{base}/v1/content"))
            .bearer_auth(&token)
            .body(huge)
            .send()
            .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 413),
            Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        }

        // Unknown and malformed ids, unknown routes.
        let r = c
            .get(format!("{base}/v1/jobs/{}", "ab".repeat(16)))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.text().await.unwrap().contains("no job"));
        let r = c
            .get(format!("{base}/v1/jobs/not-an-id"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = c
            .get(format!("{base}/v1/content/zz"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = c
            .get(format!("{base}/v1/nothing"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = c
            .post(format!("{base}/v1/jobs/{}/cancel", "ab".repeat(16)))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // Nothing was stored: no job, no content.
        let jobs = node.client().jobs().await.unwrap();
        assert!(jobs.is_empty());
        let metrics = node.client().metrics().await.unwrap();
        assert!(
            metrics.lines().any(|l| l == "agora_content_bytes 0"),
            "no blob was written"
        );
        // And the node still answers.
        assert!(node.client().status().await.is_ok());
    });
}
