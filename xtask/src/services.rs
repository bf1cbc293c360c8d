//! The local services the tests talk to (Redis, NATS, PostgreSQL): started
//! here when they are down, so a fresh machine needs nothing done by hand. The
//! commands are the ones this machine kind documents for its services.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

struct Service {
    name: &'static str,
    port: u16,
    start: &'static str,
}

const SERVICES: &[Service] = &[
    Service {
        name: "Redis",
        port: 6379,
        start: "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    },
    Service {
        name: "NATS",
        port: 4222,
        start: "mkdir -p /var/lib/nats-server && start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    },
    Service {
        name: "PostgreSQL",
        port: 5432,
        start: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    },
];

fn is_up(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Starts every service that does not answer on its port, and waits for it.
/// A service that cannot be started is an error: the tests would fail anyway,
/// and this message says why.
pub(crate) fn ensure() -> Result<()> {
    for service in SERVICES {
        if is_up(service.port) {
            continue;
        }
        eprintln!("$ {} is down; starting it: {}", service.name, service.start);
        let status = Command::new("sh").arg("-c").arg(service.start).status();
        if let Err(error) = &status {
            eprintln!("  could not run the start command: {error}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_up(service.port) {
            if Instant::now() > deadline {
                bail!(
                    "{} is not answering on 127.0.0.1:{} and could not be started",
                    service.name,
                    service.port
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}
