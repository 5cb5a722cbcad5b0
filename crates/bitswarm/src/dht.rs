//! `bitswarm dht`: a Mainline DHT node alone, until stopped: a router for a DHT of one's own
//! (on a LAN, in tests), or a node that only serves the public DHT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitswarm_peer::DhtNode;
use clap::Args;

use crate::Failure;

#[derive(Args)]
pub struct DhtArgs {
    /// UDP port to listen on; 0 picks a free one (printed).
    #[arg(long, default_value_t = crate::peer::DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind: std::net::IpAddr,
    /// A router or node to join through (HOST:PORT), in place of the usual public routers;
    /// repeatable.
    #[arg(long = "dht-router", value_name = "HOST:PORT", value_parser = parse_router)]
    pub routers: Vec<String>,
    /// Join through no router: wait to be found (the first node of a DHT of one's own).
    #[arg(long, conflicts_with = "routers")]
    pub no_bootstrap: bool,
    /// Keep the node's id and routing table in FILE across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Print the node count every N seconds (0: never).
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub status_every: u64,
    /// With each status line, and when stopped, print the routing table too: one node a line,
    /// `node ID ADDR`, good nodes first.
    #[arg(long)]
    pub routing_table: bool,
}

fn parse_router(s: &str) -> Result<String, String> {
    bitswarm_peer::parse_router(s).map(|_| s.to_owned())
}

pub fn run(a: DhtArgs) -> Result<(), Failure> {
    let routers = match (a.no_bootstrap, a.routers.is_empty()) {
        (true, _) => Vec::new(),
        (false, true) => bitswarm_peer::DEFAULT_ROUTERS.iter().map(|r| r.to_string()).collect(),
        (false, false) => a.routers.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let stop = crate::peer::stop_signal();
        let bind = SocketAddr::new(a.bind, a.port);
        let node = DhtNode::start(bind, routers, a.state.clone())
            .await
            .map_err(|e| Failure::failed(format!("cannot listen on UDP {bind}: {e}")))?;
        let addr = node.stats().addr.unwrap_or(bind);
        outln!("DHT node on UDP {addr}");
        tokio::pin!(stop);
        let every = Duration::from_secs(a.status_every.max(1));
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(every), if a.status_every > 0 => {
                    let s = node.stats();
                    errln!("DHT: {} nodes in the routing table", s.nodes);
                    if a.routing_table {
                        print_table(&node).await;
                    }
                }
            }
        }
        if a.routing_table {
            print_table(&node).await;
        }
        node.shutdown().await;
        Ok(())
    })
}

async fn print_table(node: &DhtNode) {
    let table = node.routing_table().await;
    outln!("routing table: {} nodes", table.len());
    for (id, addr) in table {
        outln!("node {id} {addr}");
    }
}
