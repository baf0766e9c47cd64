//! The owner's idle policy: owners contribute *idle* capacity. The node
//! samples how busy the machine's cores are with *other* processes (all
//! busy time minus its own; the sampling is the node's, see
//! `agora_node::capacity::LoadSampler`) and stops taking new tasks above
//! `busy_above`, resuming below `resume_below` (hysteresis, so it does not
//! flap). The decision is here, pure, so that the provider state machine
//! owns every reason to accept or refuse work.

/// The idle policy's decision, with hysteresis.
#[derive(Debug, Clone)]
pub struct IdlePolicy {
    enabled: bool,
    busy_above: f64,
    resume_below: f64,
    held_back: bool,
}

impl IdlePolicy {
    /// A policy; disabled policies always allow work.
    pub fn new(enabled: bool, busy_above: f64, resume_below: f64) -> IdlePolicy {
        IdlePolicy {
            enabled,
            busy_above,
            resume_below,
            held_back: false,
        }
    }

    /// Feeds a load sample; returns whether the node takes work.
    pub fn update(&mut self, others: Option<f64>) -> bool {
        if !self.enabled {
            return true;
        }
        if let Some(load) = others {
            if self.held_back && load < self.resume_below {
                self.held_back = false;
            } else if !self.held_back && load > self.busy_above {
                self.held_back = true;
            }
        }
        !self.held_back
    }

    /// Whether the node takes work.
    pub fn allows_work(&self) -> bool {
        !self.enabled || !self.held_back
    }
}

/// A load share as permille, for adverts.
pub fn permille(share: Option<f64>) -> u32 {
    share.map_or(0, |s| (s * 1000.0).round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_policy_has_hysteresis() {
        let mut p = IdlePolicy::new(true, 0.5, 0.3);
        assert!(p.update(Some(0.2)));
        assert!(!p.update(Some(0.6)), "busy machine: stop");
        assert!(!p.update(Some(0.4)), "between thresholds: stay stopped");
        assert!(p.update(Some(0.25)), "quiet again: resume");
        assert!(p.update(None), "no figure: keep the last decision");
        let mut off = IdlePolicy::new(false, 0.5, 0.3);
        assert!(off.update(Some(1.0)));
    }
}
