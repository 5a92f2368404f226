//! Client-side limits toward one API server: a token bucket (`--kube-api-qps` and
//! `--kube-api-burst`) shared by every identity the controller uses on that server, so a
//! fleet of thousands of Applications cannot stampede it.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::Config;
use kube::client::{Client, ClientBuilder};
use tower::{Layer, Service};

/// How much the controller asks of one API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Objects applied at once within one sync.
    pub concurrency: usize,
    /// Requests per second, on average; 0 for no limit.
    pub qps: u32,
    /// Requests allowed at once above the average.
    pub burst: u32,
    /// Object writes (dry-runs and applies) in flight toward the API server at once, by all
    /// syncs together, in their reconcile slots or outside them; 0 for no bound.
    pub writes_in_flight: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            concurrency: 32,
            qps: 0,
            burst: 0,
            writes_in_flight: 0,
        }
    }
}

/// The request budget of one API server, shared by its clients.
#[derive(Clone)]
pub struct Budget(Option<Arc<DefaultDirectRateLimiter>>);

impl Budget {
    pub fn new(limits: &ClientLimits) -> Self {
        let Some(qps) = NonZeroU32::new(limits.qps) else {
            return Budget(None);
        };
        let burst = NonZeroU32::new(limits.burst.max(limits.qps)).unwrap_or(qps);
        Budget(Some(Arc::new(RateLimiter::direct(
            Quota::per_second(qps).allow_burst(burst),
        ))))
    }

    /// A client for `config` that spends this budget.
    pub fn client(&self, config: Config) -> Result<Client, kube::Error> {
        let builder = ClientBuilder::try_from(config)?;
        Ok(match &self.0 {
            None => builder.build(),
            Some(limiter) => builder.with_layer(&RateLimitLayer(limiter.clone())).build(),
        })
    }
}

struct RateLimitLayer(Arc<DefaultDirectRateLimiter>);

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.0.clone(),
            wait: None,
            permitted: false,
        }
    }
}

/// Waits for a token in `poll_ready`, so the request that follows is within the budget.
/// (kube puts a buffer in front of the stack, which polls readiness before each call.)
pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    permitted: bool,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            if self.wait.is_none() {
                if self.limiter.check().is_ok() {
                    self.permitted = true;
                } else {
                    let limiter = self.limiter.clone();
                    self.wait = Some(Box::pin(async move { limiter.until_ready().await }));
                }
            }
            if let Some(wait) = &mut self.wait {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
                self.permitted = true;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::ServiceExt;

    #[test]
    fn no_qps_means_no_limiter() {
        assert!(Budget::new(&ClientLimits::default()).0.is_none());
        let b = Budget::new(&ClientLimits {
            qps: 5,
            burst: 0,
            ..Default::default()
        });
        assert!(b.0.is_some());
    }

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_tokens() {
        let limiter = Arc::new(RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(10).unwrap())
                .allow_burst(NonZeroU32::new(2).unwrap()),
        ));
        let service = tower::service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
        let mut limited = RateLimitLayer(limiter).layer(service);
        // The burst passes at once.
        for n in 0..2 {
            let r = tokio::time::timeout(
                Duration::from_millis(1),
                limited.ready().await.unwrap().call(n),
            )
            .await;
            assert_eq!(r.unwrap().unwrap(), n);
        }
        // The third needs a token (one per 100 ms): not ready at once, ready later.
        let pending = tokio::time::timeout(Duration::from_millis(20), limited.ready()).await;
        assert!(pending.is_err(), "a request past the burst went through");
        let later = tokio::time::timeout(Duration::from_secs(2), limited.ready()).await;
        assert!(later.is_ok(), "the bucket never refilled");
    }
}
