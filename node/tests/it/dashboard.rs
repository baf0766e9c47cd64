//! The dashboard's door: a one-time code opens one browser session, the
//! session works only for the node's own page, and requests under a
//! foreign `Host` or from a foreign `Origin` are refused whatever they
//! carry.

use std::time::Duration;

use reqwest::header::{COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};

use crate::common::{NodeProcess, rt};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[test]
fn a_login_code_works_once_and_foreign_hosts_and_origins_are_refused() {
    let node = NodeProcess::start(&[]);
    let api = node.info.api.clone();
    let port = api.rsplit_once(':').unwrap().1.to_owned();
    let base = format!("http://{api}");
    let token = node.info.token.clone();
    rt().block_on(async {
        let c = http();
        // Without a session the page is a login notice, and the data
        // routes say what is missing.
        let r = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(r.text().await.unwrap().contains("agora dashboard"));
        let r = c.get(format!("{base}/app.js")).send().await.unwrap();
        assert_eq!(r.status(), 401, "no script without a session");
        let r = c
            .get(format!("{base}/v1/events?view=network"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Codes come only to the token's holder.
        let r = c.post(format!("{base}/v1/dashboard/code")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let code: serde_json::Value = c
            .post(format!("{base}/v1/dashboard/code"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = code["url"].as_str().unwrap().to_owned();
        assert!(url.starts_with(&format!("{base}/login?code=")), "{url}");
        assert!(!url.contains(&token), "the token never sits in a URL");

        // The code opens a session once.
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()[LOCATION], "/");
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        assert!(cookie.starts_with(&format!("agora_session_{port}=")), "{cookie}");
        let again = c.get(&url).send().await.unwrap();
        assert_eq!(again.status(), 401, "a code works once");
        assert!(again.text().await.unwrap().contains("not valid"));
        let r = c.get(format!("{base}/login?code=00")).send().await.unwrap();
        assert_eq!(r.status(), 401, "made-up codes open nothing");

        // The session reads the page, the data and the event stream.
        let r = c
            .get(format!("{base}/"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("/app.js"));
        let r = c
            .get(format!("{base}/v1/status"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut events = c
            .get(format!("{base}/v1/events?view=machine"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        let first = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let first = String::from_utf8_lossy(&first).into_owned();
        assert!(first.starts_with("event: snapshot\ndata: {"), "{first}");
        assert!(
            first.contains("\"owner\"") && first.contains("\"ledger\""),
            "{first}"
        );
        drop(events);
        // A session may not mint codes, nor change anything without
        // saying where it comes from.
        let r = c
            .post(format!("{base}/v1/dashboard/code"))
            .header(COOKIE, &cookie)
            .header(ORIGIN, &base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = c
            .post(format!("{base}/v1/owner/pause"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = c
            .post(format!("{base}/v1/owner/pause"))
            .header(COOKIE, &cookie)
            .header(ORIGIN, &base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the page itself may pause");
        let r = c
            .post(format!("{base}/v1/owner/resume"))
            .header(COOKIE, &cookie)
            .header(ORIGIN, &base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        // A foreign Origin is refused, with the cookie or the token.
        for origin in ["http://evil.example", "null", &format!("http://127.0.0.1:{}", 1)] {
            let r = c
                .get(format!("{base}/v1/status"))
                .header(COOKIE, &cookie)
                .header(ORIGIN, origin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "Origin {origin}");
            let r = c
                .post(format!("{base}/v1/owner/pause"))
                .bearer_auth(&token)
                .header(ORIGIN, origin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "Origin {origin} with the token");
            assert!(r.text().await.unwrap().contains("refused"));
        }
        // A foreign Host (DNS rebinding) is refused, even with the token and
        // for the login itself.
        for host in [
            "evil.example",
            &format!("evil.example:{port}"),
            &format!("127.0.0.1.nip.io:{port}"),
        ] {
            let r = c
                .get(format!("{base}/v1/status"))
                .bearer_auth(&token)
                .header(HOST, host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "Host {host}");
            assert!(r.text().await.unwrap().contains("is not this node"));
            let r = c
                .get(format!("{base}/"))
                .header(COOKIE, &cookie)
                .header(HOST, host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "Host {host} with the session");
        }
        let r = c
            .get(format!("{base}/v1/status"))
            .bearer_auth(&token)
            .header(HOST, format!("localhost:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "localhost is the node's own name");
        let owner: serde_json::Value = c
            .get(format!("{base}/v1/owner"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(owner["paused"], false, "no refused request paused the node");

        // Logging out ends the session.
        let r = c
            .post(format!("{base}/v1/dashboard/logout"))
            .header(COOKIE, &cookie)
            .header(ORIGIN, &base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = c
            .get(format!("{base}/v1/status"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    });
}
