//! Sign-in throttling: attempts count before the slow password check, so
//! a burst of concurrent guesses cannot all run; the client is the address
//! `X-Forwarded-For` names only when a trusted proxy says so, and an IPv6
//! client is its /64; one address's failures never block another's
//! correct password; guessing one account from many addresses slows down
//! while its owner still signs in from a network they used before; the
//! counts are shared by replicas; keys do not grow with what a client
//! sends; and password checks run a few at a time, the rest told "busy".

use super::fixtures::{PortalProcess, STRONG_PASSWORD, Visitor, email, gateway, sign_in, sign_up_and_in};
use crate::harness::{free_port, redis_url};

async fn guess(portal: &str, address: Option<&str>, login: &str, password: &str) -> u16 {
    let mut visitor = Visitor::new(portal);
    if let Some(address) = address {
        visitor.extra.push(("x-forwarded-for".into(), address.into()));
    }
    visitor
        .submit("/sign-in", "/sign-in", &[("email", login), ("password", password)])
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_guesses_stop_at_the_limit_and_stay_with_their_address() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::launch(&gw, free_port(), "", &[("MAAS_PORTAL_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let target = email("victim");
    let mut victim = Visitor::new(&portal.base);
    victim.extra.push(("x-forwarded-for".into(), "198.51.100.2".into()));
    sign_up_and_in(&mut victim, "Victim Co", &target).await;

    // 100 guesses at once from one address: 10 are checked, 90 refused unchecked.
    let guesses = (0..100).map(|i| {
        let (portal, target) = (portal.base.clone(), target.clone());
        tokio::spawn(async move { guess(&portal, Some("203.0.113.9"), &target, &format!("wrong password {i}")).await })
    });
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (10, 90), "{statuses:?}");
    // The attacker's address is blocked even with the right password...
    assert_eq!(
        guess(&portal.base, Some("203.0.113.9"), &target, STRONG_PASSWORD).await,
        429
    );
    // ...the victim's is not.
    let mut victim = Visitor::new(&portal.base);
    victim.extra.push(("x-forwarded-for".into(), "198.51.100.2".into()));
    sign_in(&mut victim, &target, STRONG_PASSWORD).await;
    // A client's own X-Forwarded-For is left of what the proxy appended: not believed.
    assert_eq!(
        guess(&portal.base, Some("198.51.100.2, 203.0.113.9"), &target, "wrong").await,
        429,
        "the nearest hop decides"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::start(&gw, "");
    let target = email("someone");
    let mut owner = Visitor::new(&portal.base);
    sign_up_and_in(&mut owner, "Someone Co", &target).await;
    // Each guess claims a new address; without trusted proxies they are all 127.0.0.1.
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(guess(&portal.base, Some(&format!("192.0.2.{i}")), &target, "wrong").await);
    }
    assert_eq!(&statuses[..10], [401; 10]);
    assert_eq!(&statuses[10..], [429, 429], "spoofed addresses do not reset the count");
}

/// The portal's trusted proxy is this test: `X-Forwarded-For` names the client.
const TRUSTED: &[(&str, &str)] = &[("MAAS_PORTAL_TRUSTED_PROXIES", "127.0.0.1/32")];

/// Statuses of `count` concurrent guesses, the i-th at `login(i)` from
/// `address(i)`, spread over `portals`.
async fn storm(
    portals: &[&str],
    count: usize,
    login: impl Fn(usize) -> String,
    address: impl Fn(usize) -> String,
) -> Vec<u16> {
    let guesses: Vec<_> = (0..count)
        .map(|i| {
            let (portal, login, from) = (portals[i % portals.len()].to_owned(), login(i), address(i));
            tokio::spawn(async move { guess(&portal, Some(&from), &login, &format!("wrong password {i}")).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    statuses
}

fn tally(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ipv6_slash_64_is_one_client_and_replicas_share_the_counts() {
    let (gw, _capture) = gateway(0).await;
    let one = PortalProcess::launch(&gw, free_port(), "", TRUSTED);
    let two = PortalProcess::launch(&gw, free_port(), "", TRUSTED);
    let target = email("ipv6-victim");
    let mut owner = Visitor::new(&one.base);
    sign_up_and_in(&mut owner, "IPv6 Co", &target).await;

    // 60 guesses from 60 addresses of one /64, across two replicas: the
    // limit per network and email (10) holds for all of them together.
    let statuses = storm(
        &[&one.base, &two.base],
        60,
        |_| target.clone(),
        |i| format!("2001:db8:77:1::{:x}", i + 1),
    )
    .await;
    assert_eq!((tally(&statuses, 401), tally(&statuses, 429)), (10, 50), "{statuses:?}");
    // The next /64 is another client.
    assert_eq!(guess(&two.base, Some("2001:db8:77:2::1"), &target, "wrong").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guessing_one_account_from_many_addresses_slows_down_but_never_locks_its_owner_out() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::launch(&gw, free_port(), "", TRUSTED);
    // Mixed case, as people type it: limits and known networks key it alike.
    let target = email("Popular");
    let mut owner = Visitor::new(&portal.base);
    owner.extra.push(("x-forwarded-for".into(), "198.51.100.20".into()));
    sign_up_and_in(&mut owner, "Popular Co", &target).await;

    // One guess from each of 30 addresses: 20 are checked, then the
    // account is guarded against addresses it never signed in from.
    let statuses = storm(
        &[&portal.base],
        30,
        |_| target.clone(),
        |i| format!("203.0.113.{}", i + 1),
    )
    .await;
    assert_eq!((tally(&statuses, 401), tally(&statuses, 429)), (20, 10), "{statuses:?}");
    assert_eq!(
        guess(&portal.base, Some("192.0.2.99"), &target, STRONG_PASSWORD).await,
        429,
        "a new address waits, even with the right password"
    );
    // Its owner, from the network they signed in from before, gets in.
    let mut owner = Visitor::new(&portal.base);
    owner.extra.push(("x-forwarded-for".into(), "198.51.100.20".into()));
    sign_in(&mut owner, &target, STRONG_PASSWORD).await;
    // Another account is not slowed by this one's storm.
    assert_eq!(
        guess(&portal.base, Some("192.0.2.99"), &email("someone-else"), "wrong").await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_emails_make_fixed_size_keys_and_password_checks_are_bounded() {
    let (gw, _capture) = gateway(0).await;
    let settings = "portal:\n  password_checks:\n    concurrent: 1\n    queued: 2\n";
    let portal = PortalProcess::launch(&gw, free_port(), settings, TRUSTED);

    // A megabyte of email, from many addresses: refused without a check,
    // and the store's counters keep a fixed size.
    let huge = format!("{}@example.com", "a".repeat(1 << 20));
    for i in 0..5 {
        assert_eq!(
            guess(&portal.base, Some(&format!("192.0.2.{}", i + 1)), &huge, "wrong").await,
            401
        );
    }
    let scan = std::process::Command::new("redis-cli")
        .args([
            "-u",
            &redis_url(),
            "--scan",
            "--pattern",
            &format!("{}:*attempts*", gw.prefix),
        ])
        .output()
        .expect("redis-cli (install redis-server, which brings it)");
    let keys = String::from_utf8_lossy(&scan.stdout).into_owned();
    assert!(keys.lines().count() >= 5, "the attempts were counted: {keys}");
    assert!(keys.lines().all(|k| k.len() < 120), "{keys}");

    // 40 sign-ins at once from 40 addresses: one check runs, two wait,
    // the rest are told the portal is busy at once; none is lost or stuck.
    let nobody = |i: usize| email(&format!("nobody{i}"));
    let statuses = storm(&[&portal.base], 40, nobody, |i| format!("198.51.100.{}", i + 1)).await;
    let (checked, busy) = (tally(&statuses, 401), tally(&statuses, 503));
    assert_eq!(checked + busy, 40, "{statuses:?}");
    assert!(checked >= 3 && busy >= 20, "{statuses:?}");
    // Busy answers do not count: each of those addresses may try again.
    let first_busy = statuses.iter().position(|s| *s == 503).unwrap();
    assert_eq!(
        guess(
            &portal.base,
            Some(&format!("198.51.100.{}", first_busy + 1)),
            &nobody(first_busy),
            "wrong"
        )
        .await,
        401
    );
}
