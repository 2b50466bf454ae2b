//! Experiments: sequences of probes, chosen from what earlier probes showed, that answer a question
//! about a server rather than about one connection.
//!
//! - [`diagnose`]: *why* does the identification exchange fail (or does it)? A verdict with its
//!   evidence and the remedy.
//! - [`limits`]: how does the server behave as unauthenticated connections pile up? Its MaxStartups
//!   `start:rate:full`, LoginGraceTime and accept rate.
//!
//! Experiments compose an [`crate::engine::Engine`] with [`holder`] (connections held open on
//! purpose, always released), connect from the local addresses [`sources`] plans, and keep to a
//! [`budget`] of connections per source address, because OpenSSH 9.8+ penalises every connection
//! that leaves without authenticating (docs/facts.md §5). Their arithmetic lives in [`stats`], without I/O.

pub mod budget;
pub mod diagnose;
pub mod holder;
pub mod limits;
pub mod sources;
pub mod stats;

/// Polls futures on this task until all are done; outputs in order.
pub(crate) async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut ready = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => ready = false,
                }
            }
        }
        if ready {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
