//! The probe budget: how many connections an experiment may open from each source address.
//!
//! OpenSSH 9.8+ charges every connection that leaves without authenticating (1 s each by default)
//! to its source address and refuses the address once more than 15 s are outstanding (FACTS §5).
//! A prober that ignores this measures its own penalty. So every connection an experiment opens,
//! probe or held, is taken from a per-source budget first, and the report says what was spent.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The default connections per source address: under the ≈15 that gets an address penalised.
pub const DEFAULT_PER_SOURCE: u32 = 12;

/// Connections allowed per source address, and those spent.
#[derive(Debug)]
pub struct Budget {
    per_source: u32,
    spent: Mutex<BTreeMap<Option<IpAddr>, u32>>,
}

/// What a run spent, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetUse {
    /// Connections allowed per source address.
    pub per_source: u32,
    /// Connections opened from each source (`default` for the kernel's choice).
    pub spent: BTreeMap<String, u32>,
}

impl Budget {
    /// A budget of `per_source` connections for each source address.
    pub fn new(per_source: u32) -> Budget {
        Budget { per_source, spent: Mutex::new(BTreeMap::new()) }
    }

    /// Takes one connection from `source`'s budget; false when it is spent.
    pub fn try_take(&self, source: Option<IpAddr>) -> bool {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let n = spent.entry(source).or_insert(0);
        if *n >= self.per_source {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts a connection from `source` that was made whatever the budget said (polling for a
    /// penalty to lift): what was spent stays honest.
    pub fn charge(&self, source: Option<IpAddr>) {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        *spent.entry(source).or_insert(0) += 1;
    }

    /// Connections left for `source`.
    pub fn remaining(&self, source: Option<IpAddr>) -> u32 {
        let spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        self.per_source.saturating_sub(spent.get(&source).copied().unwrap_or(0))
    }

    /// What was spent so far.
    pub fn usage(&self) -> BudgetUse {
        let spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        BudgetUse {
            per_source: self.per_source,
            spent: spent
                .iter()
                .map(|(k, v)| (k.map_or_else(|| "default".to_string(), |ip| ip.to_string()), *v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_per_source() {
        let b = Budget::new(2);
        let a: Option<IpAddr> = Some("127.0.0.2".parse().unwrap());
        assert!(b.try_take(None) && b.try_take(None) && !b.try_take(None));
        assert!(b.try_take(a));
        assert_eq!(b.remaining(a), 1);
        assert_eq!(b.remaining(None), 0);
        let u = b.usage();
        assert_eq!(u.spent["default"], 2);
        assert_eq!(u.spent["127.0.0.2"], 1);
        b.charge(None);
        assert_eq!(b.usage().spent["default"], 3);
        assert_eq!(b.remaining(None), 0);
    }
}
