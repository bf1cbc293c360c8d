//! `ServerConfig::reuse_port`: several servers (each its own engine, as
//! several processes would be) bind one port, and the kernel hands new
//! connections to each of them; without the option the second bind fails.

use std::time::Duration;

use subs_adapters::server::{Server, ServerConfig};
use subs_core::Engine;
use subs_core::graphql::Schema;

fn engine() -> Engine {
    Engine::builder(
        Schema::parse("type Query { a: Int } type Subscription { ticks: Int }").unwrap(),
    )
    .build()
    .unwrap()
}

#[cfg(unix)]
#[tokio::test]
async fn servers_with_reuse_port_share_one_port() {
    let config = ServerConfig::default().reuse_port(true);
    let engines = [engine(), engine()];
    let first = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engines[0].clone(),
        config.clone(),
    )
    .await
    .unwrap();
    let addr = first.local_addr();
    let second = Server::bind(addr, engines[1].clone(), config)
        .await
        .unwrap();
    assert_eq!(second.local_addr(), addr);
    let refused = Server::bind(addr, engine(), ServerConfig::default()).await;
    assert!(refused.is_err(), "a listener without SO_REUSEPORT joined");

    // New connections land on both: keep them open until each engine counts one.
    let mut sockets = Vec::new();
    let both = tokio::time::timeout(Duration::from_secs(20), async {
        while engines.iter().any(|e| e.stats().connections == 0) {
            let (socket, _) = tokio_tungstenite::connect_async_with_config(
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    format!("ws://{addr}/graphql"),
                )
                .map(|mut request| {
                    request.headers_mut().insert(
                        "sec-websocket-protocol",
                        http::HeaderValue::from_static("graphql-transport-ws"),
                    );
                    request
                })
                .unwrap(),
                None,
                false,
            )
            .await
            .unwrap();
            sockets.push(socket);
            // The count follows the upgrade: wait for this one to be counted.
            let total = sockets.len() as u64;
            while engines.iter().map(|e| e.stats().connections).sum::<u64>() < total {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
    .await;
    assert!(
        both.is_ok(),
        "the kernel never handed a connection to one of the servers"
    );
    drop(sockets);
    first.shutdown().await;
    second.shutdown().await;
}
