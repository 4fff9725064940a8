//! Password hashing and checking (Argon2id), bounded: at most
//! [`PasswordCheckLimits::concurrent`] run at once and at most
//! [`PasswordCheckLimits::queued`] wait for a turn, for at most
//! [`PasswordCheckLimits::wait`]; past that the answer is "busy" at once,
//! so a flood of sign-ins costs a bounded amount of CPU and memory
//! (each Argon2 check takes 19 MiB) instead of taking the portal down.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::render::PortalError;

/// How many password checks may run and wait (`portal.password_checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCheckLimits {
    /// Checks running at once; by default one per core.
    pub concurrent: usize,
    /// Checks waiting for a turn; more are told the portal is busy.
    pub queued: usize,
    /// The longest a check waits for a turn.
    pub wait: Duration,
}

impl Default for PasswordCheckLimits {
    fn default() -> Self {
        PasswordCheckLimits {
            concurrent: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queued: 64,
            wait: Duration::from_secs(10),
        }
    }
}

/// The portal's password checks: every hash and verification goes
/// through [`PasswordChecks::run`].
pub struct PasswordChecks {
    limits: PasswordCheckLimits,
    /// A turn to run.
    running: Semaphore,
    /// A place in the building: running or waiting.
    admitted: Semaphore,
}

/// No place for another password check now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Busy {
    /// 503 with `Retry-After`, as a page that says so.
    pub fn into_response(self) -> Response {
        let mut response = PortalError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "The portal is checking many sign-ins right now. Try again in a moment.",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        response
    }
}

impl PasswordChecks {
    pub fn new(limits: PasswordCheckLimits) -> PasswordChecks {
        let concurrent = limits.concurrent.max(1);
        PasswordChecks {
            limits,
            running: Semaphore::new(concurrent),
            admitted: Semaphore::new(concurrent.saturating_add(limits.queued)),
        }
    }

    /// Runs `check` on a blocking thread when its turn comes, or says the
    /// portal is busy: no place to wait, or no turn within the wait.
    async fn run<T: Send + 'static>(&self, check: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let _place = self.admitted.try_acquire().map_err(|_| Busy)?;
        let _turn = tokio::time::timeout(self.limits.wait, self.running.acquire())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        tokio::task::spawn_blocking(check).await.map_err(|_| Busy)
    }

    /// Whether `password` matches `hash`; with no hash (no such user, or
    /// no password) it is checked against a stand-in, so both take as long,
    /// and does not match.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        self.run(move || {
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| UNKNOWN_USER_HASH.clone());
            let matches = PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false);
            known && matches
        })
        .await
    }

    /// The Argon2id PHC string of `password`.
    pub async fn hash(&self, password: String) -> Result<Result<String, PortalError>, Busy> {
        self.run(move || argon2_hash(&password)).await
    }
}

/// The Argon2id PHC string of `password`, outside any bound (the CLI).
pub async fn hash_password(password: String) -> Result<String, PortalError> {
    tokio::task::spawn_blocking(move || argon2_hash(&password))
        .await
        .map_err(|_| not_stored())?
}

fn argon2_hash(password: &str) -> Result<String, PortalError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| not_stored())
}

fn not_stored() -> PortalError {
    PortalError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The password could not be stored.",
    )
}

/// Compared against when the email is unknown, so both cases take as long.
static UNKNOWN_USER_HASH: LazyLock<String> = LazyLock::new(|| argon2_hash("no such user").unwrap_or_default());

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_past_the_running_and_waiting_places_are_busy_at_once() {
        let checks = std::sync::Arc::new(PasswordChecks::new(PasswordCheckLimits {
            concurrent: 1,
            queued: 2,
            wait: Duration::from_secs(5),
        }));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = std::sync::Arc::new(std::sync::Mutex::new(hold));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (checks, hold) = (checks.clone(), hold.clone());
            tasks.push(tokio::spawn(async move {
                checks
                    .run(move || {
                        let _ = hold.lock().unwrap().recv();
                    })
                    .await
            }));
        }
        // Three places taken (one running, two waiting): the fourth is busy.
        for _ in 0..100 {
            if checks.admitted.available_permits() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(checks.run(|| ()).await, Err(Busy));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        assert_eq!(checks.run(|| 7).await, Ok(7), "places come back");
        // A check that waits longer than `wait` is busy, not stuck.
        let slow = PasswordChecks::new(PasswordCheckLimits {
            concurrent: 1,
            queued: 1,
            wait: Duration::from_millis(50),
        });
        let slow = std::sync::Arc::new(slow);
        let runner = slow.clone();
        let long = tokio::spawn(async move { runner.run(|| std::thread::sleep(Duration::from_millis(500))).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(slow.run(|| ()).await, Err(Busy));
        assert_eq!(long.await.unwrap(), Ok(()));
    }
}
