//! A whole inbound session driven from bytes: greeting, then the input as
//! the client's side of the conversation, over a socket pair. No panic, no
//! hang (the input ends with EOF), bounded buffers.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use postern::server::handler::{Backing, Handler, Live};
use postern::server::session::{ClientFacts, Gates};
use postern::tls::Stream;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::unix::UnixStream;

struct World {
    cfg: postern::config::Config,
    policy: postern::policy::Policy,
    queue: postern::queue::Queue,
    users: postern::auth::Users,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let text = "[server]\nlisten = [\"127.0.0.1:2525\"]\nmax_message_size = \"64KiB\"\n\
                    [queue]\ndir = \"q\"\n[upstream]\nkind = \"maildir\"\ndir = \"out\"\n";
        let opts = postern::config::ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = postern::config::parse_with(text, std::path::Path::new("f.toml"), &opts)
            .expect("fuzz config");
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = postern::queue::Limits {
            max_bytes: 8 << 20,
            max_messages: 50,
            max_age: std::time::Duration::from_secs(3600),
            retry_intervals: vec![std::time::Duration::from_secs(60)],
        };
        let (queue, _) = postern::queue::Queue::open(dir.path(), limits).expect("queue");
        World {
            policy: postern::policy::Policy::new(&cfg.policy),
            cfg,
            queue,
            users: postern::auth::Users::default(),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    smol::block_on(async {
        let (server, mut client) = UnixStream::pair().expect("socketpair");
        let live = Live {
            queue: &w.queue,
            outbound: None,
            limits: None,
            observer: None,
            storm: None,
        };
        // No [[filter]] rules: the session's own rules are the target.
        let rules = postern::filter::Rules::default();
        let gates = Gates {
            hostname: "relay.test",
            server: &w.cfg.server,
            policy: &w.policy,
            services: &live,
            client: "127.0.0.1".parse().expect("ip"),
            filters: &rules,
        };
        let backing = Backing {
            queue: &w.queue,
            tls: None,
            users: &w.users,
            storm: None,
        };
        let peer = "127.0.0.1:1".parse().expect("addr");
        let mut conn = Handler::new(
            Stream::Plain(server),
            peer,
            gates,
            backing,
            ClientFacts::allowed_plain(),
            false,
        );
        let client_side = async {
            let mut greet = [0u8; 128];
            let _ = client.read(&mut greet).await;
            let _ = client.write_all(data).await;
            let _ = client.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let server_side = async {
            let _ = conn.run().await;
            drop(conn);
        };
        smol::future::zip(server_side, client_side).await;
    });
});
