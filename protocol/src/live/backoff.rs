//! Automatic reconnects for drivers: which failures are worth another connection,
//! and how long to wait before each attempt (exponential backoff with jitter).
//!
//! Sans-IO like the rest of the crate: the driver passes in the random number for the
//! jitter and sleeps the returned delay itself.

use std::time::Duration;

use super::ReconnectPolicy;
use crate::{Error, ErrorKind};

/// When and how a driver reconnects a live session after the connection fails.
/// Drivers keep it off unless the application sets one.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoReconnect {
    /// How subscriptions are sent again on the new connection.
    pub policy: ReconnectPolicy,
    /// Attempts after one failure before the driver gives up and reports the error
    /// (at least 1). A connection that authenticates resets the count.
    pub max_attempts: u32,
    /// Delay before the first attempt.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Growth of the delay per attempt (at least 1.0).
    pub multiplier: f64,
    /// Fraction of each delay that is random, from 0.0 (none) to 1.0 (anywhere between
    /// zero and the full delay), so that many clients do not reconnect in step.
    pub jitter: f64,
}

impl AutoReconnect {
    /// Defaults a production client can use: 10 attempts, 250 ms doubling to 30 s,
    /// half of each delay random.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            max_attempts: 10,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// Sets the attempt limit.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the first and the largest delay.
    pub fn delays(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_delay = initial;
        self.max_delay = max;
        self
    }

    /// Sets the jitter fraction (0.0 to 1.0).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".to_owned()));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(Error::Config(format!(
                "multiplier must be a finite number >= 1.0, got {}",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::Config(format!(
                "jitter must be within 0.0..=1.0, got {}",
                self.jitter
            )));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::Config(format!(
                "initial_delay {:?} exceeds max_delay {:?}",
                self.initial_delay, self.max_delay
            )));
        }
        Ok(())
    }
}

/// Whether a failed connection may succeed on another attempt: truncation, timeouts,
/// closes and I/O-level failures are; a rejected key, a bad request or a malformed
/// stream are not (they would fail the same way again).
pub fn is_reconnectable(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Truncated | ErrorKind::Timeout | ErrorKind::Closed | ErrorKind::Tls
    )
}

/// The attempt counter and delays of one [`AutoReconnect`] setting.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: AutoReconnect,
    attempts: u32,
}

impl Backoff {
    /// A counter at zero attempts.
    ///
    /// # Errors
    /// As [`AutoReconnect::validate`].
    pub fn new(config: AutoReconnect) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            attempts: 0,
        })
    }

    /// The setting.
    pub fn config(&self) -> &AutoReconnect {
        &self.config
    }

    /// Attempts made since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Counts an attempt and returns the delay to wait before it, or `None` when the
    /// attempt limit is reached. `random` is any 64-bit random number (the jitter is
    /// taken from it), so the same inputs give the same delays.
    pub fn next_delay(&mut self, random: u64) -> Option<Duration> {
        if self.attempts >= self.config.max_attempts {
            return None;
        }
        let exponent = i32::try_from(self.attempts).unwrap_or(i32::MAX);
        self.attempts += 1;
        let max = self.config.max_delay.as_secs_f64();
        let base = (self.config.initial_delay.as_secs_f64()
            * self.config.multiplier.powi(exponent))
        .min(max);
        // The top 53 bits give a uniform fraction in [0, 1).
        let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
        let delay = base * (1.0 - self.config.jitter * fraction);
        Some(Duration::from_secs_f64(delay.clamp(0.0, max)))
    }

    /// A connection succeeded (authenticated): the next failure starts from the
    /// initial delay again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TimerKind;

    fn config() -> AutoReconnect {
        AutoReconnect::new(ReconnectPolicy::GapFill)
            .max_attempts(4)
            .delays(Duration::from_millis(100), Duration::from_millis(350))
    }

    #[test]
    fn delays_double_up_to_the_cap_and_stop_at_the_limit() {
        let mut backoff = Backoff::new(config().jitter(0.0)).unwrap();
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay(u64::MAX)).collect();
        assert_eq!(
            delays,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec()
        );
        assert_eq!(backoff.attempts(), 4);
        backoff.reset();
        assert_eq!(backoff.next_delay(0), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_stays_within_its_fraction_of_the_delay() {
        let mut backoff = Backoff::new(config().jitter(0.5)).unwrap();
        // random 0 means no reduction; the largest random removes almost half.
        assert_eq!(backoff.next_delay(0), Some(Duration::from_millis(100)));
        let low = backoff.next_delay(u64::MAX).unwrap();
        assert!(
            low >= Duration::from_millis(100) && low < Duration::from_millis(101),
            "{low:?}"
        );
        // Half the random range removes a quarter of the capped delay.
        let mid = backoff.next_delay(1 << 63).unwrap();
        assert_eq!(mid.as_micros(), 350_000 * 3 / 4);
    }

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        for (bad, name) in [
            (config().max_attempts(0), "max_attempts"),
            (config().jitter(1.5), "jitter"),
            (
                config().delays(Duration::from_secs(2), Duration::from_secs(1)),
                "initial_delay",
            ),
        ] {
            let err = Backoff::new(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn only_transient_failures_are_reconnectable() {
        let timeout = Error::Timeout {
            timer: TimerKind::Heartbeat,
            after: Duration::from_secs(40),
        };
        assert!(is_reconnectable(&timeout));
        assert!(is_reconnectable(&Error::ClosedDuringHandshake {
            received: 3
        }));
        assert!(!is_reconnectable(&Error::AuthRejected {
            message: "bad key".to_owned()
        }));
    }
}
