//! Route lookup cost with 10,000 host patterns (5,000 exact names and 5,000
//! wildcards): an exact hit, a hit with port and mixed case, a wildcard hit
//! some labels deep, a path-prefix hit, and a miss. Lookups are hash probes,
//! so all of these should cost about the same whatever the table size.

use chathub_proxy::config::{self, Config};
use chathub_proxy::route::RouteTable;
use criterion::{Criterion, criterion_group, criterion_main};
use std::fmt::Write;
use std::hint::black_box;

const ROUTES: usize = 5_000;

fn config() -> Config {
    let mut toml = String::new();
    for i in 0..ROUTES {
        let _ = write!(
            toml,
            "[[routes]]\nname = \"r{i}\"\nhosts = [\"site{i}.example\", \"*.wild{i}.example\"]\nupstream = \"http://127.0.0.1:{port}\"\ninject = false\n",
            port = 10_000 + i % 50_000
        );
    }
    // One host with several path prefixes, the longest of which must win.
    for (j, prefix) in ["/shop", "/shop/cart", "/api"].iter().enumerate() {
        let _ = write!(
            toml,
            "[[routes]]\nname = \"p{j}\"\nhosts = [\"site42.example\"]\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:9\"\ninject = false\n"
        );
    }
    config::from_toml_str(&toml).unwrap_or_else(|e| panic!("bench config invalid: {e}"))
}

fn lookups(c: &mut Criterion) {
    let cfg = config();
    let table = RouteTable::new(&cfg);
    // Check the cases hit what their names say before timing them.
    let name = |host: &str, path: &str| table.lookup(host, path).map(|r| r.name.clone());
    assert_eq!(name("site4321.example", "/").as_deref(), Some("r4321"));
    assert_eq!(name("SITE4321.Example:8080", "/").as_deref(), Some("r4321"));
    assert_eq!(name("a.b.wild4321.example", "/").as_deref(), Some("r4321"));
    assert_eq!(
        name("site42.example", "/shop/cart/items").as_deref(),
        Some("p1")
    );
    assert_eq!(name("nothing.here.example", "/"), None);

    let mut g = c.benchmark_group("route_lookup_10k_hosts");
    g.bench_function("exact", |b| {
        b.iter(|| {
            table
                .lookup(black_box("site4321.example"), black_box("/index.html"))
                .is_some()
        })
    });
    g.bench_function("exact_port_mixed_case", |b| {
        b.iter(|| {
            table
                .lookup(black_box("SITE4321.Example:8080"), black_box("/index.html"))
                .is_some()
        })
    });
    g.bench_function("wildcard_two_labels_deep", |b| {
        b.iter(|| {
            table
                .lookup(black_box("a.b.wild4321.example"), black_box("/index.html"))
                .is_some()
        })
    });
    g.bench_function("path_prefix", |b| {
        b.iter(|| {
            table
                .lookup(black_box("site42.example"), black_box("/shop/cart/items"))
                .is_some()
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            table
                .lookup(black_box("nothing.here.example"), black_box("/"))
                .is_some()
        })
    });
    g.finish();

    c.bench_function("route_table_build_10k_hosts", |b| {
        b.iter(|| RouteTable::new(black_box(&cfg)))
    });
}

criterion_group!(benches, lookups);
criterion_main!(benches);
