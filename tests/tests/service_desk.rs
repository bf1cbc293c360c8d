//! End-to-end tests against the `service-desk` example, run as a process.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::json;
use subs_test_support::{
    Client, Frame, LEGACY_WS, ServerProcess, TRANSPORT_WS, Upgrade, patch, post, wait_stats,
};
use tokio_tungstenite::tungstenite::Error as WsError;

fn service_desk(env: &[(&str, &str)]) -> Result<ServerProcess> {
    ServerProcess::spawn("service-desk", env)
}

#[tokio::test]
async fn transport_ws_happy_path() -> Result<()> {
    let server = service_desk(&[])?;
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    assert_eq!(client.protocol.as_deref(), Some(TRANSPORT_WS));
    client.init(None).await?;
    client
        .subscribe("1", "subscription { serviceUpdated { id name } }")
        .await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;

    let created = post(
        server.addr(),
        "/services",
        &json!({ "name": "mail", "description": "SMTP relay" }),
    )
    .await?;
    assert_eq!(created["id"], "1");
    // Exactly the selected fields, nothing of the event's other fields.
    assert_eq!(
        client.next_data("1").await?,
        json!({ "serviceUpdated": { "id": "1", "name": "mail" } })
    );

    client.complete("1").await?;
    wait_stats(server.addr(), 1, 0, Duration::from_secs(5)).await?;
    // Nothing after complete: a second subscription on the same connection
    // gets two events; one for "1" would arrive before the second.
    client
        .subscribe("2", "subscription { serviceUpdated { id name } }")
        .await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;
    post(server.addr(), "/services", &json!({ "name": "web" })).await?;
    post(server.addr(), "/services", &json!({ "name": "ftp" })).await?;
    for (id, name) in [("2", "web"), ("3", "ftp")] {
        assert_eq!(
            client.recv().await?,
            json!({ "type": "next", "id": "2", "payload": { "data": { "serviceUpdated": { "id": id, "name": name } } } }),
            "nothing for the completed subscription"
        );
    }
    Ok(())
}

#[tokio::test]
async fn legacy_graphql_ws_happy_path() -> Result<()> {
    let server = service_desk(&[])?;
    let mut client = Client::connect(server.addr(), LEGACY_WS).await?;
    assert_eq!(client.protocol.as_deref(), Some(LEGACY_WS));
    client
        .send(json!({ "type": "connection_init", "payload": {} }))
        .await?;
    assert_eq!(
        client.frame().await?,
        Frame::Json(json!({ "type": "connection_ack" }))
    );
    // The legacy protocol sends a first keepalive right after the ack.
    assert_eq!(client.frame().await?, Frame::Json(json!({ "type": "ka" })));

    client
        .subscribe("a", "subscription { serviceUpdated { name status } }")
        .await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;
    post(server.addr(), "/services", &json!({ "name": "mail" })).await?;
    let data = client.recv().await?;
    assert_eq!(
        data,
        json!({ "type": "data", "id": "a", "payload": { "data": { "serviceUpdated": { "name": "mail", "status": "OPERATIONAL" } } } })
    );

    client.complete("a").await?; // `stop`
    wait_stats(server.addr(), 1, 0, Duration::from_secs(5)).await?;
    // The server may confirm the stop with `complete`; no more `data` either
    // way: a second subscription gets two events, and `data` for "a" would
    // arrive before the second.
    client
        .subscribe("b", "subscription { serviceUpdated { name status } }")
        .await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;
    post(server.addr(), "/services", &json!({ "name": "web" })).await?;
    post(server.addr(), "/services", &json!({ "name": "ftp" })).await?;
    let data_b = |name: &str| json!({ "type": "data", "id": "b", "payload": { "data": { "serviceUpdated": { "name": name, "status": "OPERATIONAL" } } } });
    let mut got = Vec::new();
    while got.len() < 2 {
        let message = client.recv().await?;
        if got.is_empty() && message == json!({ "type": "complete", "id": "a" }) {
            continue;
        }
        got.push(message);
    }
    assert_eq!(
        got,
        [data_b("web"), data_b("ftp")],
        "nothing but complete after stop"
    );
    Ok(())
}

#[tokio::test]
async fn filtering_by_service_id() -> Result<()> {
    let server = service_desk(&[])?;
    let query = |filter: &str| {
        format!("subscription {{ serviceUpdated{filter} {{ id name description status }} }}")
    };
    let mut one = Client::connect(server.addr(), TRANSPORT_WS).await?;
    let mut two = Client::connect(server.addr(), TRANSPORT_WS).await?;
    let mut all = Client::connect(server.addr(), LEGACY_WS).await?;
    for (client, filter) in [
        (&mut one, "(serviceId: \"1\")"),
        (&mut two, "(serviceId: 2)"),
        (&mut all, ""),
    ] {
        client.init(None).await?;
        client.subscribe("s", &query(filter)).await?;
    }
    wait_stats(server.addr(), 3, 3, Duration::from_secs(5)).await?;

    let addr = server.addr();
    post(addr, "/services", &json!({ "name": "mail" })).await?; // id 1
    post(addr, "/services", &json!({ "name": "web" })).await?; // id 2
    patch(addr, "/services/1", &json!({ "description": "SMTP" })).await?;
    post(addr, "/services/2/status", &json!({ "status": "OUTAGE" })).await?;
    patch(addr, "/services/2", &json!({ "name": "www" })).await?;
    post(addr, "/services/1/status", &json!({ "status": "DEGRADED" })).await?;
    // Markers, one per service, after everything above: an extra event would
    // arrive before them.
    patch(addr, "/services/1", &json!({ "description": "marker" })).await?;
    patch(addr, "/services/2", &json!({ "description": "marker" })).await?;

    let event = |id: &str, name: &str, description: Option<&str>, status: &str| json!({ "serviceUpdated": { "id": id, "name": name, "description": description, "status": status } });
    let marker_one = event("1", "mail", Some("marker"), "DEGRADED");
    let marker_two = event("2", "www", Some("marker"), "OUTAGE");
    let expected_one = vec![
        event("1", "mail", None, "OPERATIONAL"),
        event("1", "mail", Some("SMTP"), "OPERATIONAL"),
        event("1", "mail", Some("SMTP"), "DEGRADED"),
        marker_one.clone(),
    ];
    let expected_two = vec![
        event("2", "web", None, "OPERATIONAL"),
        event("2", "web", None, "OUTAGE"),
        event("2", "www", None, "OUTAGE"),
        marker_two.clone(),
    ];
    let expected_all = vec![
        expected_one[0].clone(),
        expected_two[0].clone(),
        expected_one[1].clone(),
        expected_two[1].clone(),
        expected_two[2].clone(),
        expected_one[2].clone(),
        marker_one,
        marker_two,
    ];
    for (client, expected) in [
        (&mut one, expected_one),
        (&mut two, expected_two),
        (&mut all, expected_all),
    ] {
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(client.next_data("s").await?);
        }
        // Up to and with the markers: nothing extra in between.
        assert_eq!(got, expected);
    }
    Ok(())
}

#[tokio::test]
async fn origin_allow_list() -> Result<()> {
    let server = service_desk(&[("ALLOWED_ORIGINS", "https://good.example")])?;
    let evil = Upgrade {
        protocols: &[TRANSPORT_WS],
        origin: Some("https://evil.example"),
        ..Upgrade::default()
    };
    match Client::upgrade(server.addr(), &evil).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("evil origin must get HTTP 403, got {other:?}"),
    }
    let good = Upgrade {
        origin: Some("https://good.example"),
        ..evil
    };
    let mut client = Client::upgrade(server.addr(), &good).await?;
    client.init(None).await?;
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm_and_sigint() -> Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut server = service_desk(&[])?;
        let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
        client.init(None).await?;
        client
            .subscribe("live", "subscription { serviceUpdated { id } }")
            .await?;
        wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;

        server.signal(signal)?;
        assert_eq!(
            client.recv().await?,
            json!({ "type": "complete", "id": "live" }),
            "signal {signal}"
        );
        let (code, _) = client.expect_close().await?;
        assert_eq!(code, subs_protocol::close::GOING_AWAY);
        let status = server.wait_exit(Duration::from_secs(5)).await?;
        ensure!(
            status.success(),
            "service-desk exited with {status} after signal {signal}"
        );
    }
    Ok(())
}

/// The service desk speaks GraphQL over HTTP: each mutation answers with its
/// selection and publishes its events; timestamps are ISO 8601 in UTC.
#[tokio::test]
async fn graphql_mutations_publish_their_events() -> Result<()> {
    let server = service_desk(&[])?;
    let graphql = |query: &str| {
        let body = json!({ "query": query });
        let addr = server.addr();
        async move { post(addr, "/graphql", &body).await }
    };
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    client.init(None).await?;
    client
        .subscribe(
            "s",
            "subscription { serviceStatusChanged { serviceId previous current changedAt } }",
        )
        .await?;
    client
        .subscribe(
            "r",
            "subscription { newServiceRequest { id title priority } }",
        )
        .await?;
    wait_stats(server.addr(), 1, 2, Duration::from_secs(5)).await?;

    let created =
        graphql(r#"mutation { createService(name: "mail") { id status updatedAt } }"#).await?;
    let service = &created["data"]["createService"];
    assert_eq!(service["status"], "OPERATIONAL");
    let updated_at = service["updatedAt"].as_str().unwrap_or_default();
    // 2026-11-30T22:15:03.123Z
    ensure!(
        updated_at.len() == 24 && updated_at.ends_with('Z') && updated_at.as_bytes()[10] == b'T',
        "not ISO 8601: {updated_at}"
    );
    let id = service["id"].as_str().unwrap_or_default().to_owned();

    let changed = graphql(&format!(
        r#"mutation {{ changeServiceStatus(id: "{id}", status: OUTAGE) {{ current service {{ status }} }} }}"#
    ))
    .await?;
    assert_eq!(
        changed["data"]["changeServiceStatus"],
        json!({ "current": "OUTAGE", "service": { "status": "OUTAGE" } })
    );
    let event = client.next_data("s").await?;
    assert_eq!(event["serviceStatusChanged"]["serviceId"], id.as_str());
    assert_eq!(event["serviceStatusChanged"]["previous"], "OPERATIONAL");
    assert_eq!(event["serviceStatusChanged"]["current"], "OUTAGE");

    graphql(&format!(
        r#"mutation {{ fileServiceRequest(serviceId: "{id}", title: "bounces", priority: HIGH) {{ id }} }}"#
    ))
    .await?;
    let request = client.next_data("r").await?;
    assert_eq!(request["newServiceRequest"]["title"], "bounces");
    assert_eq!(request["newServiceRequest"]["priority"], "HIGH");

    // An unknown service is a GraphQL error, not a crash.
    let missing =
        graphql(r#"mutation { changeServiceStatus(id: "99", status: OUTAGE) { current } }"#)
            .await?;
    ensure!(
        missing["errors"][0]["message"] == "no service 99",
        "{missing}"
    );
    Ok(())
}
