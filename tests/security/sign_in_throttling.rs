//! Sign-in throttling: attempts count before the slow password check, so
//! a burst of concurrent guesses cannot all run; the client is the address
//! `X-Forwarded-For` names only when a trusted proxy says so; and one
//! address's failures never block another's correct password.

use super::fixtures::{PortalProcess, STRONG_PASSWORD, Visitor, email, gateway, sign_in, sign_up_and_in};
use crate::harness::free_port;

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
