//! Teams over HTTP on a real store: an owner invites by a one-time link,
//! the invited join (new or existing users), see the organization's
//! applications, and owners change roles and remove members; members and
//! strangers cannot; and each member's own account (password, sessions,
//! an admin's reset link).

use maas_portal::PortalOptions;
use maas_store::model::TeamRole;
use reqwest::StatusCode;

mod harness;

use harness::{Browser, Portal, email, text};

const PASSWORD: &str = "correct horse battery staple";

/// The invitation link shown on the page, if any.
fn shown_link(body: &str) -> Option<String> {
    let start = body.find("data-copy=\"http")? + "data-copy=\"".len();
    let end = body[start..].find('"')? + start;
    Some(text(&body[start..end]))
}

/// Makes an invitation from the organization page; the link.
async fn invite(browser: &mut Browser, role: &str) -> String {
    let page = browser.get("/account").await;
    let seen = page.hidden("invitations_seen");
    let csrf = page.hidden("csrf");
    let made = browser
        .post(
            "/account/invitations",
            &[
                ("csrf", &csrf),
                ("role", role),
                ("days", "7"),
                ("invitations_seen", &seen),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    shown_link(&made.body).expect("the link is shown")
}

/// Signs in; the answer.
async fn sign_in(browser: &mut Browser, who: &str) -> harness::Answer {
    browser
        .submit(
            "/sign-in",
            "/sign-in",
            &[
                ("email", &email(who)),
                ("password", PASSWORD),
                ("next", "/applications"),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_invite_by_one_time_links_and_manage_their_team() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut ada = portal.browser();
    ada.sign_up("Acme", &email("ada")).await;
    let app = ada
        .submit(
            "/applications/new",
            "/applications",
            &[("name", "chatbot"), ("plan", "granite/standard")],
        )
        .await;
    assert_eq!(app.status, StatusCode::SEE_OTHER);
    let page = ada.get("/account").await;
    assert!(text(&page.body).contains("Invite someone"), "{}", page.body);

    // The link is shown once, points at this portal and is stored hashed;
    // sending the same form again (a reload) makes no second invitation.
    let link = invite(&mut ada, "member").await;
    let path = link
        .strip_prefix("http://localhost:3000")
        .expect("on the portal's public URL")
        .to_owned();
    let secret = path.strip_prefix("/join/").unwrap().to_owned();
    assert!(secret.starts_with("inv-"), "{link}");
    let acme = store
        .find_user_by_email(&email("ada"))
        .await
        .unwrap()
        .unwrap()
        .account_id;
    let open = store.open_invitations(&acme).await.unwrap();
    assert_eq!(open.len(), 1);
    let page = ada.get("/account").await;
    assert!(
        shown_link(&page.body).is_none(),
        "shown only in the answer that made it"
    );
    assert!(!page.body.contains(&secret));
    let csrf = page.hidden("csrf");
    let again = ada
        .post(
            "/account/invitations",
            &[
                ("csrf", &csrf),
                ("role", "member"),
                ("days", "7"),
                ("invitations_seen", "0"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "a stale form makes nothing");
    assert_eq!(store.open_invitations(&acme).await.unwrap().len(), 1);
    let refused = ada
        .post(
            "/account/invitations",
            &[("csrf", &csrf), ("role", "admin"), ("days", "7")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let refused = ada
        .post(
            "/account/invitations",
            &[("csrf", &csrf), ("role", "member"), ("days", "365")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    // Bob joins with a new account: a weak password is refused on the
    // form, the link then works once.
    let mut bob = portal.browser();
    let join = bob.get(&path).await;
    assert_eq!(join.status, StatusCode::OK);
    let shown = text(&join.body);
    assert!(shown.contains("Join Acme") && shown.contains("as a member"), "{shown}");
    let csrf = join.hidden("csrf");
    let weak = bob
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("display_name", "Bob"),
                ("email", &email("bob")),
                ("password", "password123"),
            ],
        )
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(&weak.body).contains("Password:"), "{}", weak.body);
    let joined = bob
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("display_name", "Bob"),
                ("email", &email("bob")),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    assert!(
        text(&joined.body).contains("sign in with your password"),
        "{}",
        joined.body
    );
    let bob_user = store
        .find_user_by_email(&email("bob"))
        .await
        .unwrap()
        .expect("bob joined");
    assert_eq!(
        (bob_user.account_id.as_str(), bob_user.team_role),
        (acme.as_str(), TeamRole::Member)
    );
    let used = portal.browser().get(&path).await;
    assert_eq!(used.status, StatusCode::NOT_FOUND);
    assert!(
        text(&used.body).contains("used, cancelled or has expired"),
        "{}",
        used.body
    );
    assert_eq!(
        portal.browser().get("/join/inv-made-up").await.status,
        StatusCode::NOT_FOUND
    );

    // Members see the organization's applications, and cannot act as owners.
    assert_eq!(sign_in(&mut bob, "bob").await.status, StatusCode::SEE_OTHER);
    assert!(bob.get("/applications").await.body.contains("chatbot"));
    let page = bob.get("/account").await;
    let shown = text(&page.body);
    assert!(
        !shown.contains("Invite someone") && shown.contains("ask an owner"),
        "{shown}"
    );
    let csrf = page.hidden("csrf");
    let ada_id = store.find_user_by_email(&email("ada")).await.unwrap().unwrap().id;
    for (path, fields) in [
        (
            "/account/invitations".to_owned(),
            vec![("role", "owner"), ("days", "7")],
        ),
        (
            format!("/account/members/{}/role", bob_user.id),
            vec![("role", "owner")],
        ),
        (format!("/account/members/{ada_id}/remove"), vec![]),
    ] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        let answer = bob.post(&path, &all).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}: {}", answer.body);
    }
    assert_eq!(
        bob.get(&format!("/account/members/{ada_id}/remove")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        store.get_user(&bob_user.id).await.unwrap().unwrap().team_role,
        TeamRole::Member
    );

    // The last owner can neither step down nor leave; with two, they can.
    let page = ada.get("/account").await;
    assert!(
        !page.body.contains(&format!("id=\"role-{ada_id}\"")),
        "no role to change: {}",
        page.body
    );
    let csrf = page.hidden("csrf");
    let refused = ada
        .post(
            &format!("/account/members/{ada_id}/role"),
            &[("csrf", &csrf), ("role", "member")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(text(&refused.body).contains("needs an owner"), "{}", refused.body);
    let promoted = ada
        .post(
            &format!("/account/members/{}/role", bob_user.id),
            &[("csrf", &csrf), ("role", "owner")],
        )
        .await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER);
    assert_eq!(
        store.get_user(&bob_user.id).await.unwrap().unwrap().team_role,
        TeamRole::Owner
    );

    // An owner removes a member after a confirmation; their session ends.
    let ask = format!("/account/members/{}/remove", bob_user.id);
    let confirm = ada.get(&ask).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(text(&confirm.body).contains("Remove Bob?"), "{}", confirm.body);
    assert!(
        store.get_user(&bob_user.id).await.unwrap().is_some(),
        "asking removes nothing"
    );
    let removed = ada.submit(&ask, &ask, &[]).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert!(store.get_user(&bob_user.id).await.unwrap().is_none());
    let after = bob.get("/applications").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "signed out");
    assert!(after.location().starts_with("/sign-in"), "{}", after.location());

    // A cancelled link stops working.
    let link = invite(&mut ada, "owner").await;
    let path = link.strip_prefix("http://localhost:3000").unwrap().to_owned();
    let id = store.open_invitations(&acme).await.unwrap()[0].id.clone();
    let cancelled = ada
        .submit("/account", &format!("/account/invitations/{id}/cancel"), &[])
        .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    assert_eq!(portal.browser().get(&path).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_joins_by_moving_when_nothing_is_left_behind() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut ada = portal.browser();
    ada.sign_up("Acme", &email("ada")).await;
    let link = invite(&mut ada, "owner").await;
    let path = link.strip_prefix("http://localhost:3000").unwrap().to_owned();
    let acme = store
        .find_user_by_email(&email("ada"))
        .await
        .unwrap()
        .unwrap()
        .account_id;

    // Sam signed up alone, with an application: asked to leave nothing behind.
    let mut sam = portal.browser();
    sam.sign_up("Sam's", &email("sam")).await;
    let app = sam
        .submit(
            "/applications/new",
            "/applications",
            &[("name", "lone"), ("plan", "granite/standard")],
        )
        .await;
    let app_id = app.location().trim_start_matches("/applications/").to_owned();
    let page = sam.get(&path).await;
    let shown = text(&page.body);
    assert!(
        shown.contains("You are signed in to") && shown.contains("Join Acme"),
        "{shown}"
    );
    let refused = sam.submit(&path, &path, &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        text(&refused.body).contains("still has applications"),
        "{}",
        refused.body
    );
    assert!(
        store.invitation(&path["/join/".len()..]).await.unwrap().is_some(),
        "still open"
    );

    let ask = format!("/applications/{app_id}/delete");
    assert_eq!(sam.submit(&ask, &ask, &[]).await.status, StatusCode::SEE_OTHER);
    let joined = sam.submit(&path, &path, &[]).await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    assert!(text(&joined.body).contains("You joined Acme"), "{}", joined.body);
    let moved = store.find_user_by_email(&email("sam")).await.unwrap().unwrap();
    assert_eq!(
        (moved.account_id.as_str(), moved.team_role),
        (acme.as_str(), TeamRole::Owner)
    );
    assert_eq!(
        sam.get("/account").await.status,
        StatusCode::SEE_OTHER,
        "signed out by the move"
    );
    assert_eq!(sign_in(&mut sam, "sam").await.status, StatusCode::SEE_OTHER);
    let page = sam.get("/account").await;
    assert!(text(&page.body).contains("Invite someone"), "an owner now");

    // Another organization's member is nobody here.
    let mut eve = portal.browser();
    eve.sign_up("Evil", &email("eve")).await;
    let ada_id = store.find_user_by_email(&email("ada")).await.unwrap().unwrap().id;
    assert_eq!(
        eve.get(&format!("/account/members/{ada_id}/remove")).await.status,
        StatusCode::NOT_FOUND
    );
    let csrf = eve.get("/account").await.hidden("csrf");
    let answer = eve
        .post(
            &format!("/account/members/{ada_id}/role"),
            &[("csrf", &csrf), ("role", "member")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        store.get_user(&ada_id).await.unwrap().unwrap().team_role,
        TeamRole::Owner
    );
}

/// A member's own account: their sessions listed (never by id) and ended
/// one by one or all but this one; a password change that needs the
/// current password and signs out the rest; an admin's one-time reset link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_manage_their_password_and_sessions_and_admins_send_reset_links() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut laptop = portal.browser();
    laptop.sign_up("Acme", &email("ada")).await;
    let mut phone = portal.browser();
    assert_eq!(sign_in(&mut phone, "ada").await.status, StatusCode::SEE_OTHER);
    let page = laptop.get("/profile").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("/end\"").count(), 2, "two sessions: {}", page.body);
    assert!(text(&page.body).contains("(this one)"));
    let session_id = |browser: &Browser| browser.cookies["maas_session"].clone();
    assert!(!page.body.contains(&session_id(&laptop)) && !page.body.contains(&session_id(&phone)));

    // The phone's session ends from the laptop.
    let phone_handle = maas_store::session_handle(&session_id(&phone));
    assert!(page.body.contains(&phone_handle));
    let ended = laptop
        .submit("/profile", &format!("/profile/sessions/{phone_handle}/end"), &[])
        .await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert_eq!(phone.get("/profile").await.status, StatusCode::SEE_OTHER, "signed out");
    assert_eq!(laptop.get("/profile").await.status, StatusCode::OK, "still signed in");
    let again = laptop
        .submit("/profile", &format!("/profile/sessions/{phone_handle}/end"), &[])
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Another user's session is nobody's to end here.
    let mut eve = portal.browser();
    eve.sign_up("Evil", &email("eve")).await;
    let laptop_handle = maas_store::session_handle(&session_id(&laptop));
    let refused = eve
        .submit("/profile", &format!("/profile/sessions/{laptop_handle}/end"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(laptop.get("/profile").await.status, StatusCode::OK);

    // The password changes only with the current one; the rest sign out.
    assert_eq!(sign_in(&mut phone, "ada").await.status, StatusCode::SEE_OTHER);
    let new_password = "violet otter lantern seventeen";
    let wrong = laptop
        .submit(
            "/profile",
            "/profile/password",
            &[("current", "not it at all"), ("new", new_password)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&wrong.body).contains("current password is not that one"),
        "{}",
        wrong.body
    );
    let weak = laptop
        .submit(
            "/profile",
            "/profile/password",
            &[("current", PASSWORD), ("new", "password1")],
        )
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    let changed = laptop
        .submit(
            "/profile",
            "/profile/password",
            &[("current", PASSWORD), ("new", new_password)],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert!(
        text(&changed.body).contains("Your password is changed"),
        "{}",
        changed.body
    );
    assert_eq!(
        laptop.get("/profile").await.status,
        StatusCode::OK,
        "this session goes on"
    );
    assert_eq!(
        phone.get("/profile").await.status,
        StatusCode::SEE_OTHER,
        "the others end"
    );
    assert_eq!(
        sign_in(&mut phone, "ada").await.status,
        StatusCode::UNAUTHORIZED,
        "the old password is gone"
    );

    // "Sign out everywhere else".
    let mut tablet = portal.browser();
    let signed = tablet
        .submit(
            "/sign-in",
            "/sign-in",
            &[
                ("email", &email("ada")),
                ("password", new_password),
                ("next", "/applications"),
            ],
        )
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    let out = laptop.submit("/profile", "/profile/sessions/end-others", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(tablet.get("/profile").await.status, StatusCode::SEE_OTHER);
    let page = laptop.get("/profile").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("/end\"").count(), 1, "only this one: {}", page.body);

    // An admin's reset link: shown once, works once, ends the sessions.
    portal.make_admin(&email("eve")).await;
    let ada = store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    let made = eve
        .submit(
            "/admin/accounts",
            &format!("/admin/users/{}/reset-password", ada.id),
            &[],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let link = shown_link(&made.body).expect("the link is shown");
    let path = link.strip_prefix("http://localhost:3000").unwrap().to_owned();
    assert!(path.starts_with("/reset-password/pwr-"), "{path}");
    let mut anyone = portal.browser();
    let form = anyone.get(&path).await;
    assert!(text(&form.body).contains(&email("ada")), "{}", form.body);
    let reset_password = "quartz meadow falcon ninety";
    let done = anyone.submit(&path, &path, &[("password", reset_password)]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(text(&done.body).contains("Your password is set"), "{}", done.body);
    assert_eq!(
        laptop.get("/profile").await.status,
        StatusCode::SEE_OTHER,
        "sessions end"
    );
    assert_eq!(anyone.get(&path).await.status, StatusCode::NOT_FOUND, "used once");
    let signed = anyone
        .submit(
            "/sign-in",
            "/sign-in",
            &[
                ("email", &email("ada")),
                ("password", reset_password),
                ("next", "/applications"),
            ],
        )
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    // Not an admin: no link.
    let eve_id = store.find_user_by_email(&email("eve")).await.unwrap().unwrap().id;
    let refused = anyone
        .submit("/profile", &format!("/admin/users/{eve_id}/reset-password"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
}
